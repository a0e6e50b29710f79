/* The plugin loader: finds plugin files, checks them, dlopen()s them and
 * validates their descriptor before anything else of them is trusted.
 *
 * SPDX-License-Identifier: MIT
 */
/* dlinfo(), dladdr1() and ElfW() are GNU extensions. */
#define _GNU_SOURCE

#include "ah-loader-private.h"
#include "ah-elf-private.h"
#include "ah-config-private.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

/* The descriptor prefix every 1.0 plugin has: the host cannot run an
 * agent without handle_batch, so that is where the mandatory part ends. */
#define AH_PLUGIN_DESC_MIN_SIZE \
  (G_STRUCT_OFFSET (AhPluginDesc, handle_batch) + sizeof (((AhPluginDesc *) NULL)->handle_batch))
#define AH_PLUGIN_NAME_MAX 64
#define AH_PLUGIN_VERSION_MAX 64
#define AH_PLUGIN_DESCRIPTION_MAX 1024
#define AH_PLUGIN_STATE_SIZE_MAX ((gsize) 64 * 1024 * 1024)
#define AH_PLUGIN_KNOWN_FLAGS ((guint32) AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE)
/* A private copy is held in memory whole while it is written to its
 * memfd: the same bound as the ELF lint's. */
#define AH_PLUGIN_COPY_SIZE_MAX ((gsize) 256 * 1024 * 1024)
#define AH_PLUGIN_READ_CHUNK ((gsize) 64 * 1024)
/* memfd_create() takes names of up to 249 bytes; the name only shows in
 * /proc/PID/maps, where a file name's start is enough to tell it. */
#define AH_PLUGIN_MEMFD_NAME_MAX 200
/* How many descriptor numbers to try when the loader already knows the
 * /proc/self/fd/N name of an earlier copy it could not unload. */
#define AH_PLUGIN_COPY_NAME_ATTEMPTS 64

/* The ELF identity of this process, to refuse a foreign object with our
 * own words before dlopen() gives a vaguer reason. */
#if GLIB_SIZEOF_VOID_P == 8
#  define AH_ELF_CLASS ELFCLASS64
#else
#  define AH_ELF_CLASS ELFCLASS32
#endif
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
#  define AH_ELF_DATA ELFDATA2LSB
#else
#  define AH_ELF_DATA ELFDATA2MSB
#endif
/* Architectures not listed here skip the machine check: dlopen() still
 * refuses a foreign object, only with its own message. */
#if defined (__x86_64__)
#  define AH_ELF_MACHINE EM_X86_64
#elif defined (__aarch64__)
#  define AH_ELF_MACHINE EM_AARCH64
#elif defined (__i386__)
#  define AH_ELF_MACHINE EM_386
#elif defined (__arm__)
#  define AH_ELF_MACHINE EM_ARM
#elif defined (__riscv)
#  define AH_ELF_MACHINE EM_RISCV
#elif defined (__powerpc64__)
#  define AH_ELF_MACHINE EM_PPC64
#elif defined (__s390x__)
#  define AH_ELF_MACHINE EM_S390
#endif

G_DEFINE_QUARK (ah-plugin-error-quark, ah_plugin_error)

static AhPlugin *
ah_plugin_alloc (const char *path)
{
  AhPlugin *plugin = g_new0 (AhPlugin, 1);

  plugin->ref_count = 1;
  plugin->path = g_strdup (path);
  plugin->copy_fd = -1;
  return plugin;
}

AhPlugin *
ah_plugin_ref (AhPlugin *self)
{
  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (g_atomic_int_get (&self->ref_count) > 0, NULL);

  g_atomic_int_inc (&self->ref_count);
  return self;
}

void
ah_plugin_unref (AhPlugin *self)
{
  if (self == NULL)
    return;
  g_return_if_fail (g_atomic_int_get (&self->ref_count) > 0);

  if (!g_atomic_int_dec_and_test (&self->ref_count))
    return;

  /* The descriptor's strings and hooks live in the module: forget them
   * before the code goes away, so a stale pointer reads as NULL. */
  memset (&self->desc, 0, sizeof self->desc);
  if (self->handle != NULL)
    dlclose (self->handle);
  /* After dlclose(): the dynamic loader opened the copy by this name. */
  if (self->copy_fd >= 0)
    g_close (self->copy_fd, NULL);
  g_free (self->checksum);
  g_free (self->path);
  g_free (self);
}

const char *
ah_plugin_get_path (AhPlugin *self)
{
  g_return_val_if_fail (self != NULL, NULL);

  return self->path;
}

const AhPluginDesc *
ah_plugin_get_desc (AhPlugin *self)
{
  g_return_val_if_fail (self != NULL, NULL);

  return &self->desc;
}

/**
 * ah_plugin_get_checksum:
 * @self: a plugin
 *
 * Returns: the SHA-256 (lowercase hex) of the bytes of the file when it
 * was opened, for a private copy exactly the bytes loaded
 */
const char *
ah_plugin_get_checksum (AhPlugin *self)
{
  g_return_val_if_fail (self != NULL, NULL);

  return self->checksum;
}

static const char *
ah_elf_class_name (unsigned char elf_class)
{
  switch (elf_class)
    {
    case ELFCLASS32:
      return "32-bit";
    case ELFCLASS64:
      return "64-bit";
    default:
      return "of an unknown class";
    }
}

static const char *
ah_elf_data_name (unsigned char elf_data)
{
  switch (elf_data)
    {
    case ELFDATA2LSB:
      return "little-endian";
    case ELFDATA2MSB:
      return "big-endian";
    default:
      return "of an unknown byte order";
    }
}

/* Opens @path for reading without side effects: O_NONBLOCK so that a
 * FIFO named *.so cannot hang the host in open(). */
static int
ah_plugin_open_fd (const char *path, GError **error)
{
  int saved_errno;
  int fd;

  fd = g_open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0);
  if (fd >= 0)
    return fd;

  saved_errno = errno;
  if (saved_errno == ENOENT || saved_errno == ENOTDIR)
    g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND,
                 "%s: no such file", path);
  else
    g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                 "%s: cannot open: %s", path, g_strerror (saved_errno));
  return -1;
}

/* Only a regular file is read: a device or a directory named *.so is not
 * a plugin, and reading one could block or have side effects. */
static gboolean
ah_plugin_fd_check_regular (int fd, const char *path, struct stat *ret_st, GError **error)
{
  if (fstat (fd, ret_st) != 0)
    {
      int saved_errno = errno;

      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: cannot stat: %s", path, g_strerror (saved_errno));
      return FALSE;
    }
  if (!S_ISREG (ret_st->st_mode))
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not an ELF file (not a regular file)", path);
      return FALSE;
    }
  return TRUE;
}

/* pread() until @size bytes or the end of the file; a regular file never
 * returns a short read before its end, except when interrupted. Returns
 * the bytes read, or -1 with @error set. */
static gssize
ah_plugin_pread_full (int fd, void *buffer, gsize size, goffset offset,
                      const char *path, GError **error)
{
  gsize n_read = 0;

  while (n_read < size)
    {
      gssize n = pread (fd, (char *) buffer + n_read, size - n_read,
                        (off_t) (offset + (goffset) n_read));

      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          int saved_errno = errno;

          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                       "%s: cannot read: %s", path, g_strerror (saved_errno));
          return -1;
        }
      if (n == 0)
        break;
      n_read += (gsize) n;
    }
  return (gssize) n_read;
}

static gboolean
ah_plugin_range_fits (guint64 offset, guint64 length, guint64 limit)
{
  return offset <= limit && length <= limit - offset;
}

static const char *
ah_plugin_segment_type_name (guint32 type)
{
  switch (type)
    {
    case PT_LOAD:
      return "PT_LOAD";
    case PT_DYNAMIC:
      return "PT_DYNAMIC";
    case PT_TLS:
      return "PT_TLS";
    default:
      return "segment";
    }
}

/* The dynamic loader trusts the program headers and maps what they say:
 * a segment that ends past the end of the file - a plugin still being
 * written, cut short - is mapped anyway, and the loader's first touch of
 * it kills the process with SIGBUS. So every segment whose file part
 * the loader reads must lie inside the file. Same wording as the ELF
 * lint (core/ah-elf.c). */
static gboolean
ah_plugin_check_segments (int fd, const ElfW(Ehdr) *header, guint64 file_size,
                          const char *path, GError **error)
{
  g_autofree ElfW(Phdr) *segments = NULL;
  guint64 table_size;
  gssize n_read;

  if (header->e_phoff == 0 || header->e_phnum == 0)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not a valid ELF file: no program headers: the dynamic loader "
                   "could not map it", path);
      return FALSE;
    }
  if (header->e_phentsize != sizeof (ElfW(Phdr)))
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not a valid ELF file: program header entries are %u bytes, not %u",
                   path, (guint) header->e_phentsize, (guint) sizeof (ElfW(Phdr)));
      return FALSE;
    }
  /* e_phnum is 16 bits: the table is at most 64 Ki entries. */
  table_size = (guint64) header->e_phnum * sizeof (ElfW(Phdr));
  if (!ah_plugin_range_fits (header->e_phoff, table_size, file_size))
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not a valid ELF file: program headers (%u entries at offset 0x%"
                   G_GINT64_MODIFIER "x) extend past the end of the file (%"
                   G_GUINT64_FORMAT " bytes)", path, (guint) header->e_phnum,
                   (guint64) header->e_phoff, file_size);
      return FALSE;
    }

  segments = g_new (ElfW(Phdr), header->e_phnum);
  n_read = ah_plugin_pread_full (fd, segments, (gsize) table_size,
                                 (goffset) header->e_phoff, path, error);
  if (n_read < 0)
    return FALSE;
  if ((guint64) n_read < table_size)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not a valid ELF file: the file shrank while it was read", path);
      return FALSE;
    }

  for (guint i = 0; i < header->e_phnum; i++)
    {
      const ElfW(Phdr) *segment = &segments[i];

      if (segment->p_type != PT_LOAD && segment->p_type != PT_DYNAMIC
          && segment->p_type != PT_TLS)
        continue;
      if (!ah_plugin_range_fits (segment->p_offset, segment->p_filesz, file_size))
        {
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                       "%s: not a valid ELF file: %s segment %u (offset 0x%"
                       G_GINT64_MODIFIER "x, %" G_GUINT64_FORMAT " bytes) extends past "
                       "the end of the file (%" G_GUINT64_FORMAT " bytes)", path,
                       ah_plugin_segment_type_name (segment->p_type), i,
                       (guint64) segment->p_offset, (guint64) segment->p_filesz, file_size);
          return FALSE;
        }
    }
  return TRUE;
}

/* Looks at the file before dlopen() does: dlopen() of a text file gives
 * "invalid ELF header" at best, and opening a FIFO or a device would block
 * or have side effects. Only a regular file with an ELF header of this
 * machine's class, byte order and architecture, of type ET_DYN, whose
 * segments are all in the file, passes. @fd is the file itself or its private copy; messages name @path. */
static gboolean
ah_plugin_check_fd (int fd, const char *path, GError **error)
{
  ElfW(Ehdr) header;
  struct stat st;
  gssize n_read;

  if (!ah_plugin_fd_check_regular (fd, path, &st, error))
    return FALSE;

  n_read = ah_plugin_pread_full (fd, &header, sizeof header, 0, path, error);
  if (n_read < 0)
    return FALSE;

  if (n_read < SELFMAG || memcmp (header.e_ident, ELFMAG, SELFMAG) != 0)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not an ELF file", path);
      return FALSE;
    }
  if (n_read < (gssize) sizeof header)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not an ELF file (truncated header)", path);
      return FALSE;
    }
  if (header.e_ident[EI_CLASS] != AH_ELF_CLASS)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: ELF object is %s, this host is %s", path,
                   ah_elf_class_name (header.e_ident[EI_CLASS]),
                   ah_elf_class_name (AH_ELF_CLASS));
      return FALSE;
    }
  if (header.e_ident[EI_DATA] != AH_ELF_DATA)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: ELF object is %s, this host is %s", path,
                   ah_elf_data_name (header.e_ident[EI_DATA]),
                   ah_elf_data_name (AH_ELF_DATA));
      return FALSE;
    }
  /* Class and byte order match ours, so the header reads natively. */
  if (header.e_type != ET_DYN)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: not a shared object: %s (ELF type %u)", path,
                   ah__elf_type_name (header.e_type), (guint) header.e_type);
      return FALSE;
    }
#ifdef AH_ELF_MACHINE
  if (header.e_machine != AH_ELF_MACHINE)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: ELF object is for machine %u, this host is machine %u",
                   path, (guint) header.e_machine, (guint) AH_ELF_MACHINE);
      return FALSE;
    }
#endif

  return ah_plugin_check_segments (fd, &header, (guint64) st.st_size, path, error);
}

/* SHA-256 of everything @fd holds from its start to its end, read in
 * pieces: a plugin opened in place is never held in memory whole. */
static char *
ah_plugin_fd_checksum (int fd, const char *path, GError **error)
{
  g_autoptr(GChecksum) checksum = g_checksum_new (G_CHECKSUM_SHA256);
  g_autofree guint8 *buffer = g_malloc (AH_PLUGIN_READ_CHUNK);
  goffset offset = 0;

  for (;;)
    {
      gssize n = ah_plugin_pread_full (fd, buffer, AH_PLUGIN_READ_CHUNK, offset, path, error);

      if (n < 0)
        return NULL;
      if (n == 0)
        break;
      g_checksum_update (checksum, buffer, n);
      offset += n;
    }
  return g_strdup (g_checksum_get_string (checksum));
}

/**
 * ah_plugin_file_checksum:
 * @path: a plugin file
 * @error: return location for an #AH_PLUGIN_ERROR
 *
 * Hashes the file as it is now, to tell a plugin rebuilt with other
 * bytes from one merely touched (ah_plugin_get_checksum() of the running
 * version is the other side of the comparison).
 *
 * Returns: (transfer full): the SHA-256 in lowercase hex, or %NULL with
 * @error set (NOT_FOUND, NOT_ELF for a file that is not regular, LOAD)
 */
char *
ah_plugin_file_checksum (const char *path, GError **error)
{
  struct stat st;
  char *checksum;
  int fd;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  fd = ah_plugin_open_fd (path, error);
  if (fd < 0)
    return NULL;
  if (!ah_plugin_fd_check_regular (fd, path, &st, error))
    {
      g_close (fd, NULL);
      return NULL;
    }
  checksum = ah_plugin_fd_checksum (fd, path, error);
  g_close (fd, NULL);
  return checksum;
}

/* Checks a text field the host prints and compares: present, non-empty,
 * bounded (strnlen: never read further than the bound plus one), UTF-8. */
static gboolean
ah_plugin_check_text_field (const char *value, const char *field, gsize max_len,
                            gboolean required, const char *path, GError **error)
{
  gsize len;

  if (value == NULL)
    {
      if (!required)
        return TRUE;
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: %s is NULL", path, field);
      return FALSE;
    }

  len = strnlen (value, max_len + 1);
  if (len == 0 && required)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: %s is empty", path, field);
      return FALSE;
    }
  if (len > max_len)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: %s is longer than %" G_GSIZE_FORMAT " bytes",
                   path, field, max_len);
      return FALSE;
    }
  if (!g_utf8_validate (value, (gssize) len, NULL))
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: %s is not valid UTF-8", path, field);
      return FALSE;
    }
  return TRUE;
}

static gboolean
ah_plugin_name_chars_are_valid (const char *name)
{
  for (const char *p = name; *p != '\0'; p++)
    {
      if (!g_ascii_isalnum (*p) && *p != '_' && *p != '-')
        return FALSE;
    }
  return TRUE;
}

/**
 * ah__plugin_desc_check:
 *
 * Validates the descriptor @raw an entry function returned and copies it
 * into @ret_desc in this host's layout. @raw is only ever read up to its
 * own struct_size, and abi_version before anything else: a descriptor of
 * another ABI may be laid out in any way at all.
 */
gboolean
ah__plugin_desc_check (const AhPluginDesc *raw, const char *path,
                       AhPluginDesc *ret_desc, guint32 *ret_struct_size,
                       GError **error)
{
  AhPluginDesc desc = { 0 };
  guint32 abi_version;
  guint32 struct_size;
  gsize name_len;

  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (ret_desc != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (raw == NULL)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: %s returned NULL", path, AH_PLUGIN_ENTRY_SYMBOL);
      return FALSE;
    }

  /* memcpy: the plugin's pointer carries no alignment promise we can
   * rely on before its ABI is known. */
  memcpy (&abi_version, raw, sizeof abi_version);
  if (AH_PLUGIN_ABI_VERSION_MAJOR (abi_version) != AH_PLUGIN_ABI_MAJOR
      || AH_PLUGIN_ABI_VERSION_MINOR (abi_version) > AH_PLUGIN_ABI_MINOR)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_ABI,
                   "%s: ABI %u.%u, host supports %u.%u", path,
                   AH_PLUGIN_ABI_VERSION_MAJOR (abi_version),
                   AH_PLUGIN_ABI_VERSION_MINOR (abi_version),
                   AH_PLUGIN_ABI_MAJOR, AH_PLUGIN_ABI_MINOR);
      return FALSE;
    }

  memcpy (&struct_size, (const char *) raw + G_STRUCT_OFFSET (AhPluginDesc, struct_size),
          sizeof struct_size);
  if (struct_size < AH_PLUGIN_DESC_MIN_SIZE)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: struct_size %u is smaller than the %u bytes "
                   "ABI %u.0 requires", path, struct_size,
                   (guint) AH_PLUGIN_DESC_MIN_SIZE, AH_PLUGIN_ABI_MAJOR);
      return FALSE;
    }
  /* A larger struct of a minor we know means fields nobody defined: the
   * plugin was built against a header that is not ours. */
  if (struct_size > sizeof (AhPluginDesc))
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: struct_size %u is larger than the %u bytes "
                   "of ABI %u.%u", path, struct_size, (guint) sizeof (AhPluginDesc),
                   AH_PLUGIN_ABI_VERSION_MAJOR (abi_version),
                   AH_PLUGIN_ABI_VERSION_MINOR (abi_version));
      return FALSE;
    }
  /* Every field past the mandatory prefix is pointer-sized: a size in the
   * middle of one would leave half a hook pointer to call. */
  if (struct_size % sizeof (gpointer) != 0)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: struct_size %u does not end on a field boundary",
                   path, struct_size);
      return FALSE;
    }
  memcpy (&desc, raw, struct_size);

  if (desc.name == NULL)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: name is NULL", path);
      return FALSE;
    }
  name_len = strnlen (desc.name, AH_PLUGIN_NAME_MAX + 1);
  if (name_len == 0)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: name is empty", path);
      return FALSE;
    }
  if (name_len > AH_PLUGIN_NAME_MAX)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: name is longer than %u bytes",
                   path, AH_PLUGIN_NAME_MAX);
      return FALSE;
    }
  if (!ah_plugin_name_chars_are_valid (desc.name))
    {
      g_autofree char *escaped = g_strescape (desc.name, NULL);

      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: name \"%s\" has characters outside [A-Za-z0-9_-]",
                   path, escaped);
      return FALSE;
    }

  if (!ah_plugin_check_text_field (desc.version, "version", AH_PLUGIN_VERSION_MAX,
                                   TRUE, path, error))
    return FALSE;
  if (!ah_plugin_check_text_field (desc.description, "description",
                                   AH_PLUGIN_DESCRIPTION_MAX, FALSE, path, error))
    return FALSE;

  if (desc.handle_batch == NULL)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: handle_batch is NULL", path);
      return FALSE;
    }

  /* The host allocates state_size per agent for whole pools: a typo here
   * must not become an out-of-memory abort at pre-warm. */
  if (desc.state_size > AH_PLUGIN_STATE_SIZE_MAX)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: state_size %" G_GSIZE_FORMAT
                   " exceeds the limit of 64 MiB", path, desc.state_size);
      return FALSE;
    }

  if ((desc.flags & ~AH_PLUGIN_KNOWN_FLAGS) != 0)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid descriptor: flags 0x%x has unknown bits 0x%x", path,
                   desc.flags, desc.flags & ~AH_PLUGIN_KNOWN_FLAGS);
      return FALSE;
    }

  /* Later minors give meaning to these slots; a plugin with one set
   * would change behaviour silently the day they do. */
  for (guint i = 0; i < G_N_ELEMENTS (desc.reserved); i++)
    {
      if (desc.reserved[i] != NULL)
        {
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                       "%s: invalid descriptor: reserved[%u] is not zero", path, i);
          return FALSE;
        }
    }

  /* ABI 1.1 fields. A struct_size that ends before one leaves it zero in
   * @desc: such a plugin simply does not have it. */
  if (struct_size >= G_STRUCT_OFFSET (AhPluginDesc, config_schema) + sizeof desc.config_schema
      && desc.config_schema != NULL)
    {
      /* The slot was reserved[0] in 1.0, which had to be zero: a 1.0
       * plugin that sets it was never valid, and what it points to was
       * not written as a schema. */
      if (AH_PLUGIN_ABI_VERSION_MINOR (abi_version) < 1)
        {
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                       "%s: invalid descriptor: config_schema is set, but ABI %u.%u "
                       "has no such field (its reserved[0] must be zero)", path,
                       AH_PLUGIN_ABI_VERSION_MAJOR (abi_version),
                       AH_PLUGIN_ABI_VERSION_MINOR (abi_version));
          return FALSE;
        }
      if (!ah_config_schema_check (desc.config_schema, path, error))
        return FALSE;
    }

  *ret_desc = desc;
  if (ret_struct_size != NULL)
    *ret_struct_size = struct_size;
  return TRUE;
}

/* dlsym() on a handle searches the object's dependencies too: an entry
 * point found there belongs to another plugin (or a library that should
 * not define it), and loading it would run someone else's agents. */
static gboolean
ah_plugin_symbol_is_own (void *handle, void *symbol, char **ret_owner)
{
  struct link_map *own_map = NULL;
  struct link_map *symbol_map = NULL;
  Dl_info info;

  if (dlinfo (handle, RTLD_DI_LINKMAP, &own_map) != 0 || own_map == NULL)
    return FALSE;
  if (dladdr1 (symbol, &info, (void **) &symbol_map, RTLD_DL_LINKMAP) == 0
      || symbol_map == NULL)
    return FALSE;
  if (symbol_map == own_map)
    return TRUE;

  *ret_owner = g_strdup (info.dli_fname != NULL ? info.dli_fname : "another object");
  return FALSE;
}

/* What dlopen() did not do: find our entry point in the object itself
 * and check the descriptor it returns. */
static gboolean
ah_plugin_resolve_entry (AhPlugin *plugin, const char *path, GError **error)
{
  g_autofree char *owner = NULL;
  AhPluginGetDescFunc entry;
  void *symbol;

  dlerror ();
  symbol = dlsym (plugin->handle, AH_PLUGIN_ENTRY_SYMBOL);
  if (symbol == NULL)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NO_ENTRY,
                   "%s: missing symbol %s", path, AH_PLUGIN_ENTRY_SYMBOL);
      return FALSE;
    }
  if (!ah_plugin_symbol_is_own (plugin->handle, symbol, &owner))
    {
      if (owner != NULL)
        g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NO_ENTRY,
                     "%s: missing symbol %s (the one found belongs to its dependency %s)",
                     path, AH_PLUGIN_ENTRY_SYMBOL, owner);
      else
        g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NO_ENTRY,
                     "%s: missing symbol %s (cannot tell which object defines it)",
                     path, AH_PLUGIN_ENTRY_SYMBOL);
      return FALSE;
    }

  /* ISO C has no cast from object to function pointer; POSIX requires
   * this one to work for dlsym()'s result. */
  entry = (AhPluginGetDescFunc) symbol;
  return ah__plugin_desc_check (entry (), path, &plugin->desc, &plugin->plugin_struct_size,
                                error);
}

/**
 * ah_plugin_open:
 * @path: the plugin file
 * @error: return location for an #AH_PLUGIN_ERROR
 *
 * Loads @path with RTLD_NOW (an undefined symbol fails here, not in the
 * middle of a run) and RTLD_LOCAL (two plugins, or two versions of one
 * during a hot reload, never resolve each other's symbols), then checks
 * its descriptor. Every error message starts with @path.
 *
 * Returns: (transfer full): the plugin, or %NULL with @error set
 */
AhPlugin *
ah_plugin_open (const char *path, GError **error)
{
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *dlopen_path = NULL;
  g_autofree char *checksum = NULL;
  int fd;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  fd = ah_plugin_open_fd (path, error);
  if (fd < 0)
    return NULL;
  if (!ah_plugin_check_fd (fd, path, error))
    {
      g_close (fd, NULL);
      return NULL;
    }
  /* Hashed before dlopen(): a reload compares this with the file's
   * checksum later, and a file replaced in between reads as changed,
   * which only costs one reload too many, never one too few. */
  checksum = ah_plugin_fd_checksum (fd, path, error);
  g_close (fd, NULL);
  if (checksum == NULL)
    return NULL;

  plugin = ah_plugin_alloc (path);
  plugin->checksum = g_steal_pointer (&checksum);

  /* Without a '/', dlopen() would search LD_LIBRARY_PATH and the system
   * directories instead of opening the file we just checked. */
  dlopen_path = strchr (path, '/') != NULL ? g_strdup (path) : g_strconcat ("./", path, NULL);
  plugin->handle = dlopen (dlopen_path, RTLD_NOW | RTLD_LOCAL);
  if (plugin->handle == NULL)
    {
      const char *reason = dlerror ();

      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: cannot load: %s", path, reason != NULL ? reason : "unknown dlopen error");
      return NULL;
    }

  if (!ah_plugin_resolve_entry (plugin, path, error))
    return NULL;

  return g_steal_pointer (&plugin);
}

static void
ah_plugin_set_too_large_error (const char *path, GError **error)
{
  g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
               "%s: too large to load (more than %u MiB)", path,
               (guint) (AH_PLUGIN_COPY_SIZE_MAX / (1024 * 1024)));
}

/* Reads the whole of @path (a regular file of at most
 * AH_PLUGIN_COPY_SIZE_MAX bytes) in one pass: the copy and its checksum
 * must be of the same bytes, whatever a build does to the file meanwhile. */
static GBytes *
ah_plugin_read_whole (const char *path, GError **error)
{
  g_autoptr(GByteArray) bytes = NULL;
  struct stat st;
  int fd;

  fd = ah_plugin_open_fd (path, error);
  if (fd < 0)
    return NULL;
  if (!ah_plugin_fd_check_regular (fd, path, &st, error))
    {
      g_close (fd, NULL);
      return NULL;
    }
  if ((guint64) st.st_size > AH_PLUGIN_COPY_SIZE_MAX)
    {
      g_close (fd, NULL);
      ah_plugin_set_too_large_error (path, error);
      return NULL;
    }

  /* Room for the last, short read too: no reallocation for a file that
   * does not change while it is read. */
  bytes = g_byte_array_sized_new ((guint) MIN ((gsize) st.st_size + AH_PLUGIN_READ_CHUNK,
                                               AH_PLUGIN_COPY_SIZE_MAX + 1));
  /* Not st_size alone: a file still being written may grow while read.
   * One byte past the bound is enough to know it is too large. */
  while (bytes->len <= AH_PLUGIN_COPY_SIZE_MAX)
    {
      gsize want = MIN (AH_PLUGIN_READ_CHUNK, AH_PLUGIN_COPY_SIZE_MAX + 1 - bytes->len);
      guint old_len = bytes->len;
      gssize n;

      g_byte_array_set_size (bytes, old_len + (guint) want);
      n = ah_plugin_pread_full (fd, bytes->data + old_len, want, old_len, path, error);
      if (n < 0)
        {
          g_close (fd, NULL);
          return NULL;
        }
      g_byte_array_set_size (bytes, old_len + (guint) n);
      if ((gsize) n < want)
        break;
    }
  g_close (fd, NULL);

  if (bytes->len > AH_PLUGIN_COPY_SIZE_MAX)
    {
      ah_plugin_set_too_large_error (path, error);
      return NULL;
    }
  return g_byte_array_free_to_bytes (g_steal_pointer (&bytes));
}

/* A memfd named after @path's base name, holding @bytes. */
static int
ah_plugin_memfd_new (const char *path, GBytes *bytes, GError **error)
{
  g_autofree char *base_name = g_path_get_basename (path);
  gsize size = 0;
  const guint8 *data = g_bytes_get_data (bytes, &size);
  gsize n_written = 0;
  int saved_errno;
  int fd;

  if (strlen (base_name) > AH_PLUGIN_MEMFD_NAME_MAX)
    base_name[AH_PLUGIN_MEMFD_NAME_MAX] = '\0';

  fd = memfd_create (base_name, MFD_CLOEXEC);
  if (fd < 0)
    {
      saved_errno = errno;
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: cannot make a private copy: %s", path, g_strerror (saved_errno));
      return -1;
    }

  while (n_written < size)
    {
      gssize n = write (fd, data + n_written, size - n_written);

      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          saved_errno = errno;
          g_close (fd, NULL);
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                       "%s: cannot make a private copy: %s", path, g_strerror (saved_errno));
          return -1;
        }
      n_written += (gsize) n;
    }
  return fd;
}

/* The dynamic loader finds an object it already has by name before it
 * looks at the file: a copy we closed but it could not unload (a
 * nodelete or unique-symbol plugin) still answers to its old
 * /proc/self/fd/N, and a new copy that got the same descriptor number
 * would be handed that old object. Such a number is exchanged for a
 * higher one. Returns the (possibly new) descriptor, and its name in
 * @ret_name, or -1 with @error set; @fd is consumed either way. */
static int
ah_plugin_copy_fd_unshadow (int fd, const char *path, char **ret_name, GError **error)
{
  for (guint attempt = 0; attempt < AH_PLUGIN_COPY_NAME_ATTEMPTS; attempt++)
    {
      g_autofree char *name = g_strdup_printf ("/proc/self/fd/%d", fd);
      void *stale = dlopen (name, RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
      int higher;

      if (stale == NULL)
        {
          /* The failed lookup left a message behind; it is no error. */
          dlerror ();
          *ret_name = g_steal_pointer (&name);
          return fd;
        }
      dlclose (stale);

      higher = fcntl (fd, F_DUPFD_CLOEXEC, fd + 1);
      if (higher < 0)
        {
          int saved_errno = errno;

          g_close (fd, NULL);
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                       "%s: cannot make a private copy: %s", path, g_strerror (saved_errno));
          return -1;
        }
      g_close (fd, NULL);
      fd = higher;
    }

  g_close (fd, NULL);
  g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
               "%s: cannot make a private copy: %u earlier copies are still loaded",
               path, AH_PLUGIN_COPY_NAME_ATTEMPTS);
  return -1;
}

/* The loader's reasons name the file it opened, /proc/self/fd/N, which
 * means nothing to whoever reads the log: they get @path instead. A
 * longer number (N followed by a digit) is another descriptor, left as
 * it is. */
static char *
ah_plugin_reason_rename (const char *reason, const char *fd_name, const char *path)
{
  g_autoptr(GString) out = g_string_new (NULL);
  gsize name_len = strlen (fd_name);
  const char *p = reason;

  for (;;)
    {
      const char *hit = strstr (p, fd_name);

      if (hit == NULL)
        break;
      g_string_append_len (out, p, hit - p);
      if (g_ascii_isdigit (hit[name_len]))
        g_string_append_len (out, hit, (gssize) name_len);
      else
        g_string_append (out, path);
      p = hit + name_len;
    }
  g_string_append (out, p);
  return g_string_free (g_steal_pointer (&out), FALSE);
}

/**
 * ah_plugin_open_copy:
 * @path: the plugin file
 * @error: return location for an #AH_PLUGIN_ERROR
 *
 * Like ah_plugin_open(), but loads a private copy of @path: its bytes,
 * read once, in a memfd the module is loaded from through
 * /proc/self/fd/N. The dynamic loader recognises an object it has by
 * name or by file identity; the memfd is a new file every time, so each
 * call gives a module of its own (statics included) even while another
 * version of @path is loaded, and @path may be overwritten at once. The
 * memfd stays open as long as the module. Messages name @path.
 *
 * Returns: (transfer full): the plugin, or %NULL with @error set
 */
AhPlugin *
ah_plugin_open_copy (const char *path, GError **error)
{
  g_autoptr(AhPlugin) plugin = NULL;
  g_autoptr(GBytes) bytes = NULL;
  g_autoptr(GChecksum) checksum = NULL;
  g_autofree char *fd_name = NULL;
  gsize size = 0;
  gconstpointer data;
  int fd;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  bytes = ah_plugin_read_whole (path, error);
  if (bytes == NULL)
    return NULL;

  data = g_bytes_get_data (bytes, &size);
  checksum = g_checksum_new (G_CHECKSUM_SHA256);
  g_checksum_update (checksum, data, (gssize) size);

  fd = ah_plugin_memfd_new (path, bytes, error);
  if (fd < 0)
    return NULL;
  g_clear_pointer (&bytes, g_bytes_unref);

  plugin = ah_plugin_alloc (path);
  plugin->checksum = g_strdup (g_checksum_get_string (checksum));
  plugin->copy_fd = fd;

  /* The same checks as in place, on the bytes that will be loaded. */
  if (!ah_plugin_check_fd (plugin->copy_fd, path, error))
    return NULL;

  plugin->copy_fd = ah_plugin_copy_fd_unshadow (plugin->copy_fd, path, &fd_name, error);
  if (plugin->copy_fd < 0)
    return NULL;

  plugin->handle = dlopen (fd_name, RTLD_NOW | RTLD_LOCAL);
  if (plugin->handle == NULL)
    {
      const char *reason = dlerror ();
      g_autofree char *renamed = ah_plugin_reason_rename (
          reason != NULL ? reason : "unknown dlopen error", fd_name, path);

      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: cannot load: %s", path, renamed);
      return NULL;
    }

  if (!ah_plugin_resolve_entry (plugin, path, error))
    return NULL;

  return g_steal_pointer (&plugin);
}

static void
ah_describe_line (GString *out, const char *key, const char *value)
{
  g_autofree char *label = g_strconcat (key, ":", NULL);

  /* 16: the longest keys ("descriptor size:", "snapshot format:"). */
  g_string_append_printf (out, "%-16s %s\n", label, value);
}

/**
 * ah_plugin_describe:
 * @self: a plugin
 *
 * Returns: (transfer full): aligned "key: value" lines, one per property,
 * each ending in a newline, then a "config:" line followed by the config
 * schema, one indented line per key, as `agenthost inspect` prints them
 */
char *
ah_plugin_describe (AhPlugin *self)
{
  static const char *const hook_names[] = {
    "agent_init", "agent_finalize", "handle_batch", "state_snapshot", "state_restore",
  };
  const AhPluginDesc *desc;
  g_autoptr(GString) out = NULL;
  g_autoptr(GString) present = NULL;
  g_autoptr(GString) absent = NULL;
  g_autofree char *abi = NULL;
  g_autofree char *struct_size = NULL;
  g_autofree char *state_size = NULL;
  g_autofree char *state_format = NULL;
  gboolean hook_set[G_N_ELEMENTS (hook_names)];

  g_return_val_if_fail (self != NULL, NULL);

  desc = &self->desc;
  hook_set[0] = desc->agent_init != NULL;
  hook_set[1] = desc->agent_finalize != NULL;
  hook_set[2] = desc->handle_batch != NULL;
  hook_set[3] = desc->state_snapshot != NULL;
  hook_set[4] = desc->state_restore != NULL;

  present = g_string_new (NULL);
  absent = g_string_new (NULL);
  for (guint i = 0; i < G_N_ELEMENTS (hook_names); i++)
    {
      GString *list = hook_set[i] ? present : absent;

      if (list->len > 0)
        g_string_append (list, ", ");
      g_string_append (list, hook_names[i]);
    }

  abi = g_strdup_printf ("%u.%u (host %u.%u)",
                         AH_PLUGIN_ABI_VERSION_MAJOR (desc->abi_version),
                         AH_PLUGIN_ABI_VERSION_MINOR (desc->abi_version),
                         AH_PLUGIN_ABI_MAJOR, AH_PLUGIN_ABI_MINOR);
  struct_size = g_strdup_printf ("%u bytes (host %u)", self->plugin_struct_size,
                                 (guint) sizeof (AhPluginDesc));
  state_size = g_strdup_printf ("%" G_GSIZE_FORMAT " bytes", desc->state_size);
  state_format = g_strdup_printf ("%u", desc->state_format);

  out = g_string_new (NULL);
  ah_describe_line (out, "name", desc->name);
  ah_describe_line (out, "version", desc->version);
  ah_describe_line (out, "description", desc->description != NULL ? desc->description : "(none)");
  ah_describe_line (out, "file", self->path);
  ah_describe_line (out, "abi", abi);
  ah_describe_line (out, "descriptor size", struct_size);
  ah_describe_line (out, "state size", state_size);
  ah_describe_line (out, "flags",
                    (desc->flags & AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE) != 0
                    ? "state-layout-stable" : "none");
  ah_describe_line (out, "snapshot format", state_format);
  ah_describe_line (out, "hooks present", present->len > 0 ? present->str : "(none)");
  ah_describe_line (out, "hooks absent", absent->len > 0 ? absent->str : "(none)");
  /* Last, and on lines of its own: the schema has a line per key. */
  g_string_append (out, "config:\n");
  ah_config_describe_schema (desc->config_schema, out);

  return g_string_free (g_steal_pointer (&out), FALSE);
}

/* The build tree's plugins are only wanted by programs of that build tree:
 * an installed agenthost must never pick up a developer's half-built
 * plugin that happens to sit at the same absolute path. */
static gboolean
ah_loader_running_uninstalled (void)
{
  static gsize uninstalled = 0;   /* 0: unknown, 1: installed, 2: uninstalled */

  if (g_once_init_enter (&uninstalled))
    {
      char *exe = realpath ("/proc/self/exe", NULL);
      char *root = realpath (AH_BUILD_ROOT, NULL);
      gboolean inside = FALSE;

      if (exe != NULL && root != NULL)
        {
          gsize root_len = strlen (root);

          inside = strncmp (exe, root, root_len) == 0
                   && (exe[root_len] == '/' || (root_len > 0 && root[root_len - 1] == '/'));
        }
      free (exe);
      free (root);
      g_once_init_leave (&uninstalled, inside ? 2 : 1);
    }
  return uninstalled == 2;
}

static gboolean
ah_plugin_bare_name_is_valid (const char *name)
{
  return *name != '\0' && ah_plugin_name_chars_are_valid (name);
}

/* Tries DIR/NAME.so then DIR/NAME/NAME.so; records each new candidate in
 * @tried (a directory listed twice is looked in once). */
static char *
ah_plugin_find_in_dir (const char *dir, const char *name, GPtrArray *tried)
{
  g_autofree char *file_name = g_strconcat (name, ".so", NULL);
  char *candidates[2];

  candidates[0] = g_build_filename (dir, file_name, NULL);
  candidates[1] = g_build_filename (dir, name, file_name, NULL);

  for (guint i = 0; i < G_N_ELEMENTS (candidates); i++)
    {
      gboolean seen = FALSE;

      for (guint j = 0; j < tried->len && !seen; j++)
        seen = g_str_equal (g_ptr_array_index (tried, j), candidates[i]);
      if (seen)
        {
          g_free (candidates[i]);
          continue;
        }

      g_ptr_array_add (tried, candidates[i]);
      if (g_file_test (candidates[i], G_FILE_TEST_IS_REGULAR))
        {
          for (guint k = i + 1; k < G_N_ELEMENTS (candidates); k++)
            g_free (candidates[k]);
          return g_strdup (candidates[i]);
        }
    }
  return NULL;
}

static char *
ah_plugin_join_tried (GPtrArray *tried)
{
  g_autoptr(GString) joined = g_string_new (NULL);

  for (guint i = 0; i < tried->len; i++)
    {
      if (i > 0)
        g_string_append (joined, ", ");
      g_string_append (joined, g_ptr_array_index (tried, i));
    }
  return g_string_free (g_steal_pointer (&joined), FALSE);
}

/**
 * ah_plugin_find:
 * @name: a bare plugin name ([A-Za-z0-9_-]+) or a path containing a '/'
 * @base_dir: (nullable): what a relative path is relative to (the
 *   manifest's directory); %NULL for the current directory
 * @dirs: (nullable) (array zero-terminated=1): directories searched first
 * @error: return location for an #AH_PLUGIN_ERROR_NOT_FOUND
 *
 * Returns: (transfer full): the plugin file's path, or %NULL with @error
 * set, naming every path tried
 */
char *
ah_plugin_find (const char *name, const char *base_dir,
                const char * const *dirs, GError **error)
{
  g_autoptr(GPtrArray) tried = NULL;
  g_autofree char *tried_text = NULL;
  const char *env_path;
  char *found = NULL;

  g_return_val_if_fail (name != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (strchr (name, '/') != NULL)
    {
      g_autofree char *path = NULL;

      if (base_dir == NULL || g_path_is_absolute (name))
        path = g_strdup (name);
      else
        path = g_build_filename (base_dir, name, NULL);

      if (g_file_test (path, G_FILE_TEST_EXISTS))
        return g_steal_pointer (&path);
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND,
                   "%s: plugin not found; tried %s", name, path);
      return NULL;
    }

  /* A bare name is glued to directory names: dots, spaces and the like
   * would let it name files outside them ("..") or look like a path. */
  if (!ah_plugin_bare_name_is_valid (name))
    {
      g_autofree char *escaped = g_strescape (name, NULL);

      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND,
                   "%s: not a valid plugin name (a bare name is [A-Za-z0-9_-]+, "
                   "a path contains a '/')", escaped);
      return NULL;
    }

  tried = g_ptr_array_new_with_free_func (g_free);

  for (gsize i = 0; dirs != NULL && dirs[i] != NULL && found == NULL; i++)
    found = ah_plugin_find_in_dir (dirs[i], name, tried);

  env_path = g_getenv ("AGENTHOST_PLUGIN_PATH");
  if (found == NULL && env_path != NULL)
    {
      g_auto(GStrv) env_dirs = g_strsplit (env_path, G_SEARCHPATH_SEPARATOR_S, -1);

      /* Empty elements are skipped: "a::b" must not mean the current
       * directory, which would make plugins depend on where one stands. */
      for (gsize i = 0; env_dirs[i] != NULL && found == NULL; i++)
        {
          if (*env_dirs[i] != '\0')
            found = ah_plugin_find_in_dir (env_dirs[i], name, tried);
        }
    }

  if (found == NULL && ah_loader_running_uninstalled ())
    found = ah_plugin_find_in_dir (AH_PLUGIN_BUILD_DIR, name, tried);
  if (found == NULL)
    found = ah_plugin_find_in_dir (AH_PLUGIN_INSTALL_DIR, name, tried);
  if (found != NULL)
    return found;

  tried_text = ah_plugin_join_tried (tried);
  g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND,
               "%s: plugin not found; tried %s", name, tried_text);
  return NULL;
}
