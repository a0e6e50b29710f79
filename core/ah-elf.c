/* Reading a plugin's ELF file before anything of it runs: what would keep
 * it from being unloaded, run its code on every load or unload, or let
 * other objects bind to it.
 *
 * Everything comes from the file's bytes, read with read(), never from
 * dlopen(): the point is to look before loading. The file may be
 * truncated, or written to hurt, so every offset, size and count in it is
 * checked against the file before it is followed, with overflow-safe
 * arithmetic, and every structure is copied out with memcpy() (the bytes
 * carry no alignment promise).
 *
 * What is read is what the dynamic loader reads: the program headers and
 * the dynamic segment, with addresses mapped to the file through the
 * PT_LOAD segments. The section headers only add names: the full symbol
 * table, and where .init and .fini are.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-elf-private.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

/* No plugin comes near this; a larger file is refused before it is read
 * into memory. */
#define AH_ELF_FILE_SIZE_MAX ((guint64) 256 * 1024 * 1024)
/* Names quoted in messages are cut here: a hostile file may hold a name
 * of megabytes, and a line is meant to be read. */
#define AH_ELF_NAME_DISPLAY_MAX 200

/* glibc's <elf.h> has it since 2.30. */
#ifndef DF_1_PIE
#  define DF_1_PIE 0x08000000
#endif

#if G_BYTE_ORDER == G_LITTLE_ENDIAN
#  define AH_ELF_DATA ELFDATA2LSB
#else
#  define AH_ELF_DATA ELFDATA2MSB
#endif

typedef struct {
  guint64  value;
  gboolean present;
} AhElfDynValue;

/* The dynamic entries the linter reads. A tag given twice keeps its last
 * value, as glibc's _dl_get_dynamic_info() does. */
typedef struct {
  AhElfDynValue init;
  AhElfDynValue fini;
  AhElfDynValue init_array;
  AhElfDynValue init_arraysz;
  AhElfDynValue fini_array;
  AhElfDynValue fini_arraysz;
  AhElfDynValue symtab;
  AhElfDynValue strtab;
  AhElfDynValue strsz;
  AhElfDynValue syment;
  AhElfDynValue hash;
  AhElfDynValue gnu_hash;
  AhElfDynValue rela;
  AhElfDynValue relasz;
  AhElfDynValue relaent;
  AhElfDynValue flags;
  AhElfDynValue flags_1;
} AhElfDynamic;

/* A symbol table and its string table, both inside the file's bytes. */
typedef struct {
  const char   *what;        /* ".dynsym" or ".symtab", for messages */
  const guint8 *entries;     /* n_symbols Elf64_Sym, unaligned */
  gsize         n_symbols;
  const char   *names;
  gsize         names_size;
} AhElfSymbols;

typedef struct {
  const char   *path;
  guint8       *data;        /* the whole file */
  gsize         size;
  Elf64_Ehdr    header;
  Elf64_Phdr   *segments;
  gsize         n_segments;
  Elf64_Shdr   *sections;    /* NULL when the file has no section headers */
  gsize         n_sections;
  const char   *section_names;
  gsize         section_names_size;
  AhElfDynamic  dynamic;
  AhElfSymbols  dynsym;      /* what the dynamic loader binds */
  AhElfSymbols  symtab;      /* every symbol, unless the file is stripped */
} AhElfImage;

/* A function the loader calls on load or unload: DT_INIT, DT_FINI or one
 * slot of DT_INIT_ARRAY / DT_FINI_ARRAY. */
typedef struct {
  guint64     address;
  const char *name;          /* borrowed from a symbol table; NULL when unknown */
} AhElfFunction;

static void
ah_elf_image_clear (AhElfImage *image)
{
  g_clear_pointer (&image->data, g_free);
  g_clear_pointer (&image->segments, g_free);
  g_clear_pointer (&image->sections, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (AhElfImage, ah_elf_image_clear)

static void ah_elf_set_malformed (GError **error, const char *path,
                                  const char *format, ...) G_GNUC_PRINTF (3, 4);

/* Structural damage: the file says it is ELF but its own offsets and
 * sizes do not hold together. */
static void
ah_elf_set_malformed (GError **error, const char *path, const char *format, ...)
{
  g_autofree char *reason = NULL;
  va_list args;

  va_start (args, format);
  reason = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
               "%s: not a valid ELF file: %s", path, reason);
}

static gboolean
ah_elf_range_fits (guint64 offset, guint64 length, guint64 limit)
{
  return offset <= limit && length <= limit - offset;
}

/* @count entries of @entry_size bytes at file offset @offset, all inside
 * the file. */
static gboolean
ah_elf_table_fits (AhElfImage *image, guint64 offset, guint64 count, guint64 entry_size,
                   const char *what, GError **error)
{
  guint64 length;

  if (!g_uint64_checked_mul (&length, count, entry_size)
      || !ah_elf_range_fits (offset, length, image->size))
    {
      ah_elf_set_malformed (error, image->path,
                            "%s (%" G_GUINT64_FORMAT " entries at offset 0x%" G_GINT64_MODIFIER
                            "x) extend past the end of the file (%" G_GSIZE_FORMAT " bytes)",
                            what, count, offset, image->size);
      return FALSE;
    }
  return TRUE;
}

/* A NUL-terminated string at @offset of a string table, or NULL when it
 * starts or ends outside it. */
static const char *
ah_elf_string_at (const char *table, gsize table_size, guint64 offset)
{
  if (table == NULL || offset >= table_size)
    return NULL;
  if (memchr (table + offset, '\0', table_size - (gsize) offset) == NULL)
    return NULL;
  return table + offset;
}

/* A name from the file, safe to quote in one line of a message. */
static char *
ah_elf_display_name (const char *name)
{
  gsize length = strnlen (name, AH_ELF_NAME_DISPLAY_MAX + 1);
  g_autofree char *cut = g_strndup (name, MIN (length, (gsize) AH_ELF_NAME_DISPLAY_MAX));
  g_autofree char *escaped = g_strescape (cut, NULL);

  if (length > AH_ELF_NAME_DISPLAY_MAX)
    return g_strconcat (escaped, "...", NULL);
  return g_steal_pointer (&escaped);
}

static gboolean
ah_elf_image_load (AhElfImage *image, const char *path, GError **error)
{
  struct stat st;
  gsize n_read = 0;
  gsize size;
  int saved_errno;
  int fd;

  image->path = path;

  /* O_NONBLOCK: a FIFO named like a plugin must not hang the caller in
   * open(); it is refused as not a regular file right after. */
  fd = g_open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0);
  if (fd < 0)
    {
      saved_errno = errno;
      if (saved_errno == ENOENT || saved_errno == ENOTDIR)
        g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND,
                     "%s: no such file", path);
      else
        g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                     "%s: cannot open: %s", path, g_strerror (saved_errno));
      return FALSE;
    }

  if (fstat (fd, &st) != 0)
    {
      saved_errno = errno;
      g_close (fd, NULL);
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: cannot stat: %s", path, g_strerror (saved_errno));
      return FALSE;
    }
  if (!S_ISREG (st.st_mode))
    {
      g_close (fd, NULL);
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not an ELF file (not a regular file)", path);
      return FALSE;
    }
  if ((guint64) st.st_size > AH_ELF_FILE_SIZE_MAX)
    {
      g_close (fd, NULL);
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: too large to inspect (%" G_GUINT64_FORMAT " bytes, the limit is %u MiB)",
                   path, (guint64) st.st_size, (guint) (AH_ELF_FILE_SIZE_MAX / (1024 * 1024)));
      return FALSE;
    }

  /* Read, not mmap(): a plugin rebuilt while it is being read would turn
   * a mapping into SIGBUS; with read() it is only a shorter file. */
  size = (gsize) st.st_size;
  image->data = g_malloc (size + 1);
  while (n_read < size)
    {
      gssize n = read (fd, image->data + n_read, size - n_read);

      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          saved_errno = errno;
          g_close (fd, NULL);
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                       "%s: cannot read: %s", path, g_strerror (saved_errno));
          return FALSE;
        }
      if (n == 0)
        break;
      n_read += (gsize) n;
    }
  g_close (fd, NULL);
  image->size = n_read;
  return TRUE;
}

const char *
ah__elf_type_name (guint16 elf_type)
{
  switch (elf_type)
    {
    case ET_NONE:
      return "an object of no type";
    case ET_REL:
      return "a relocatable object file";
    case ET_EXEC:
      return "an executable";
    case ET_CORE:
      return "a core dump";
    default:
      return "an object of unknown type";
    }
}

static gboolean
ah_elf_image_parse_header (AhElfImage *image, GError **error)
{
  const guint8 *ident = image->data;

  if (image->size < SELFMAG || memcmp (ident, ELFMAG, SELFMAG) != 0)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not an ELF file", image->path);
      return FALSE;
    }
  if (image->size < EI_NIDENT)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not an ELF file (truncated header)", image->path);
      return FALSE;
    }
  if (ident[EI_CLASS] != ELFCLASS64)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: ELF object is %s; only 64-bit objects can be inspected", image->path,
                   ident[EI_CLASS] == ELFCLASS32 ? "32-bit" : "of an unknown class");
      return FALSE;
    }
  /* Foreign byte order would need every field swapped; this host could
   * not load such a plugin anyway. */
  if (ident[EI_DATA] != AH_ELF_DATA)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: ELF object is %s, this host is %s", image->path,
                   ident[EI_DATA] == ELFDATA2LSB ? "little-endian"
                   : ident[EI_DATA] == ELFDATA2MSB ? "big-endian" : "of an unknown byte order",
                   AH_ELF_DATA == ELFDATA2LSB ? "little-endian" : "big-endian");
      return FALSE;
    }
  if (image->size < sizeof (Elf64_Ehdr))
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF,
                   "%s: not an ELF file (truncated header)", image->path);
      return FALSE;
    }
  memcpy (&image->header, image->data, sizeof image->header);
  if (image->header.e_type != ET_DYN)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: not a shared object: %s (ELF type %u)", image->path,
                   ah__elf_type_name (image->header.e_type), (guint) image->header.e_type);
      return FALSE;
    }
  return TRUE;
}

/* Section headers are optional (a loader never reads them), but when the
 * header points at them they must be there: a truncated file loses them
 * first, as they come last. */
static gboolean
ah_elf_image_parse_sections (AhElfImage *image, GError **error)
{
  const Elf64_Ehdr *header = &image->header;
  Elf64_Shdr first;
  guint64 count;
  guint64 names_index;

  if (header->e_shoff == 0)
    return TRUE;
  if (header->e_shentsize != sizeof (Elf64_Shdr))
    {
      ah_elf_set_malformed (error, image->path, "section header entries are %u bytes, not %u",
                            (guint) header->e_shentsize, (guint) sizeof (Elf64_Shdr));
      return FALSE;
    }
  if (!ah_elf_table_fits (image, header->e_shoff, 1, sizeof (Elf64_Shdr),
                          "section headers", error))
    return FALSE;

  /* More than 0xff00 sections: the real count and the index of the name
   * table move into section 0 (the ELF gABI's extended numbering). */
  memcpy (&first, image->data + header->e_shoff, sizeof first);
  count = header->e_shnum != 0 ? header->e_shnum : first.sh_size;
  names_index = header->e_shstrndx != SHN_XINDEX ? header->e_shstrndx : first.sh_link;
  if (count == 0)
    return TRUE;
  if (!ah_elf_table_fits (image, header->e_shoff, count, sizeof (Elf64_Shdr),
                          "section headers", error))
    return FALSE;

  image->n_sections = (gsize) count;
  image->sections = g_new (Elf64_Shdr, image->n_sections);
  memcpy (image->sections, image->data + header->e_shoff,
          image->n_sections * sizeof (Elf64_Shdr));

  if (names_index == SHN_UNDEF)
    return TRUE;
  if (names_index >= image->n_sections)
    {
      ah_elf_set_malformed (error, image->path,
                            "section name table is section %" G_GUINT64_FORMAT
                            " of %" G_GSIZE_FORMAT, names_index, image->n_sections);
      return FALSE;
    }
  if (image->sections[names_index].sh_type != SHT_NOBITS)
    {
      const Elf64_Shdr *names = &image->sections[names_index];

      if (!ah_elf_range_fits (names->sh_offset, names->sh_size, image->size))
        {
          ah_elf_set_malformed (error, image->path,
                                "section name table extends past the end of the file");
          return FALSE;
        }
      image->section_names = (const char *) image->data + names->sh_offset;
      image->section_names_size = (gsize) names->sh_size;
    }
  return TRUE;
}

static const char *
ah_elf_segment_type_name (guint32 type)
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

static gboolean
ah_elf_image_parse_segments (AhElfImage *image, GError **error)
{
  const Elf64_Ehdr *header = &image->header;
  guint64 count = header->e_phnum;

  /* Extended numbering: 0xffff program headers means "see sh_info of
   * section 0". */
  if (count == PN_XNUM)
    {
      Elf64_Shdr first;

      if (header->e_shoff == 0
          || !ah_elf_range_fits (header->e_shoff, sizeof first, image->size))
        {
          ah_elf_set_malformed (error, image->path,
                                "%u program headers, but no section 0 to hold their count",
                                (guint) PN_XNUM);
          return FALSE;
        }
      memcpy (&first, image->data + header->e_shoff, sizeof first);
      count = first.sh_info;
    }
  if (header->e_phoff == 0 || count == 0)
    {
      ah_elf_set_malformed (error, image->path,
                            "no program headers: the dynamic loader could not map it");
      return FALSE;
    }
  if (header->e_phentsize != sizeof (Elf64_Phdr))
    {
      ah_elf_set_malformed (error, image->path, "program header entries are %u bytes, not %u",
                            (guint) header->e_phentsize, (guint) sizeof (Elf64_Phdr));
      return FALSE;
    }
  if (!ah_elf_table_fits (image, header->e_phoff, count, sizeof (Elf64_Phdr),
                          "program headers", error))
    return FALSE;

  image->n_segments = (gsize) count;
  image->segments = g_new (Elf64_Phdr, image->n_segments);
  memcpy (image->segments, image->data + header->e_phoff,
          image->n_segments * sizeof (Elf64_Phdr));

  /* The segments whose file part is read, by the loader or below: all of
   * it must be in the file, or dlopen() would map past its end. */
  for (gsize i = 0; i < image->n_segments; i++)
    {
      const Elf64_Phdr *segment = &image->segments[i];

      if (segment->p_type != PT_LOAD && segment->p_type != PT_DYNAMIC
          && segment->p_type != PT_TLS)
        continue;
      if (!ah_elf_range_fits (segment->p_offset, segment->p_filesz, image->size))
        {
          ah_elf_set_malformed (error, image->path,
                                "%s segment %" G_GSIZE_FORMAT " (offset 0x%" G_GINT64_MODIFIER
                                "x, %" G_GUINT64_FORMAT " bytes) extends past the end of the file "
                                "(%" G_GSIZE_FORMAT " bytes)",
                                ah_elf_segment_type_name (segment->p_type), i,
                                (guint64) segment->p_offset, (guint64) segment->p_filesz,
                                image->size);
          return FALSE;
        }
    }
  return TRUE;
}

/* The file bytes the loader maps at @address: at least @length of them,
 * all in the file part of one PT_LOAD segment. @ret_available receives
 * how many there are from @address to the end of that part. */
static gboolean
ah_elf_map_address (AhElfImage *image, guint64 address, guint64 length, const char *what,
                    const guint8 **ret_data, guint64 *ret_available, GError **error)
{
  for (gsize i = 0; i < image->n_segments; i++)
    {
      const Elf64_Phdr *segment = &image->segments[i];
      guint64 delta;

      if (segment->p_type != PT_LOAD || address < segment->p_vaddr
          || address - segment->p_vaddr >= segment->p_filesz)
        continue;

      delta = address - segment->p_vaddr;
      if (length > segment->p_filesz - delta)
        {
          ah_elf_set_malformed (error, image->path,
                                "%s (%" G_GUINT64_FORMAT " bytes at 0x%" G_GINT64_MODIFIER
                                "x) runs past the end of its segment", what, length, address);
          return FALSE;
        }
      /* p_offset + p_filesz lies in the file: checked with the segments. */
      *ret_data = image->data + segment->p_offset + delta;
      if (ret_available != NULL)
        *ret_available = segment->p_filesz - delta;
      return TRUE;
    }

  ah_elf_set_malformed (error, image->path,
                        "%s (0x%" G_GINT64_MODIFIER "x) is not in the file part of a loadable "
                        "segment", what, address);
  return FALSE;
}

static AhElfDynValue *
ah_elf_dynamic_slot (AhElfDynamic *dynamic, gint64 tag)
{
  switch (tag)
    {
    case DT_INIT:
      return &dynamic->init;
    case DT_FINI:
      return &dynamic->fini;
    case DT_INIT_ARRAY:
      return &dynamic->init_array;
    case DT_INIT_ARRAYSZ:
      return &dynamic->init_arraysz;
    case DT_FINI_ARRAY:
      return &dynamic->fini_array;
    case DT_FINI_ARRAYSZ:
      return &dynamic->fini_arraysz;
    case DT_SYMTAB:
      return &dynamic->symtab;
    case DT_STRTAB:
      return &dynamic->strtab;
    case DT_STRSZ:
      return &dynamic->strsz;
    case DT_SYMENT:
      return &dynamic->syment;
    case DT_HASH:
      return &dynamic->hash;
    case DT_GNU_HASH:
      return &dynamic->gnu_hash;
    case DT_RELA:
      return &dynamic->rela;
    case DT_RELASZ:
      return &dynamic->relasz;
    case DT_RELAENT:
      return &dynamic->relaent;
    case DT_FLAGS:
      return &dynamic->flags;
    case DT_FLAGS_1:
      return &dynamic->flags_1;
    default:
      return NULL;
    }
}

static gboolean
ah_elf_image_parse_dynamic (AhElfImage *image, GError **error)
{
  const Elf64_Phdr *dynamic_segment = NULL;
  gsize n_entries;

  for (gsize i = 0; i < image->n_segments && dynamic_segment == NULL; i++)
    {
      if (image->segments[i].p_type == PT_DYNAMIC)
        dynamic_segment = &image->segments[i];
    }
  if (dynamic_segment == NULL)
    {
      ah_elf_set_malformed (error, image->path,
                            "no dynamic segment: the dynamic loader could not link it");
      return FALSE;
    }

  /* In the file: checked with the segments. The list ends at DT_NULL or
   * at the end of the segment, whichever comes first. */
  n_entries = (gsize) (dynamic_segment->p_filesz / sizeof (Elf64_Dyn));
  for (gsize i = 0; i < n_entries; i++)
    {
      Elf64_Dyn entry;
      AhElfDynValue *slot;

      memcpy (&entry, image->data + dynamic_segment->p_offset + i * sizeof entry, sizeof entry);
      if (entry.d_tag == DT_NULL)
        break;
      slot = ah_elf_dynamic_slot (&image->dynamic, entry.d_tag);
      if (slot != NULL)
        {
          slot->value = entry.d_un.d_val;
          slot->present = TRUE;
        }
    }
  return TRUE;
}

/* The GNU hash table does not store the symbol count: it is one past the
 * last symbol of the longest-indexed chain (the same walk glibc and
 * elfutils do). Symbols below symoffset are not hashed (imports). */
static gboolean
ah_elf_count_gnu_hash_symbols (AhElfImage *image, guint64 address, guint64 *ret_count,
                               GError **error)
{
  const guint8 *table = NULL;
  guint64 available = 0;
  guint32 words[4];
  guint32 n_buckets;
  guint32 symbol_offset;
  guint64 buckets_at;
  guint64 chains_at;
  guint64 last_bucket = 0;
  guint64 index;

  if (!ah_elf_map_address (image, address, sizeof words, "DT_GNU_HASH", &table, &available,
                           error))
    return FALSE;
  memcpy (words, table, sizeof words);
  n_buckets = words[0];
  symbol_offset = words[1];
  /* words[2] Bloom filter words of 64 bits; words[3] is its shift. */
  buckets_at = sizeof words + (guint64) words[2] * sizeof (guint64);
  chains_at = buckets_at + (guint64) n_buckets * sizeof (guint32);
  if (chains_at > available)
    {
      ah_elf_set_malformed (error, image->path,
                            "DT_GNU_HASH buckets run past the end of their segment");
      return FALSE;
    }

  for (guint32 i = 0; i < n_buckets; i++)
    {
      guint32 bucket;

      memcpy (&bucket, table + buckets_at + (guint64) i * sizeof bucket, sizeof bucket);
      last_bucket = MAX (last_bucket, bucket);
    }
  if (last_bucket == 0)
    {
      *ret_count = symbol_offset;
      return TRUE;
    }
  if (last_bucket < symbol_offset)
    {
      ah_elf_set_malformed (error, image->path,
                            "DT_GNU_HASH bucket points below its first hashed symbol");
      return FALSE;
    }

  for (index = last_bucket; ; index++)
    {
      guint64 chain_at = chains_at + (index - symbol_offset) * sizeof (guint32);
      guint32 hash;

      if (!ah_elf_range_fits (chain_at, sizeof hash, available))
        {
          ah_elf_set_malformed (error, image->path,
                                "DT_GNU_HASH chain runs past the end of its segment");
          return FALSE;
        }
      memcpy (&hash, table + chain_at, sizeof hash);
      /* The low bit marks the last symbol of a chain. */
      if ((hash & 1) != 0)
        break;
    }
  *ret_count = index + 1;
  return TRUE;
}

static gboolean
ah_elf_image_parse_dynsym (AhElfImage *image, GError **error)
{
  const AhElfDynamic *dynamic = &image->dynamic;
  const guint8 *data = NULL;
  guint64 count = 0;
  guint64 length;

  image->dynsym.what = ".dynsym";
  if (!dynamic->symtab.present)
    return TRUE;
  if (!dynamic->strtab.present || !dynamic->strsz.present)
    {
      ah_elf_set_malformed (error, image->path, "DT_SYMTAB without DT_STRTAB and DT_STRSZ");
      return FALSE;
    }
  if (dynamic->syment.present && dynamic->syment.value != sizeof (Elf64_Sym))
    {
      ah_elf_set_malformed (error, image->path, "DT_SYMENT is %" G_GUINT64_FORMAT ", not %u",
                            dynamic->syment.value, (guint) sizeof (Elf64_Sym));
      return FALSE;
    }

  if (dynamic->gnu_hash.present)
    {
      if (!ah_elf_count_gnu_hash_symbols (image, dynamic->gnu_hash.value, &count, error))
        return FALSE;
    }
  else if (dynamic->hash.present)
    {
      guint32 words[2];   /* nbucket, nchain: nchain is the symbol count */

      if (!ah_elf_map_address (image, dynamic->hash.value, sizeof words, "DT_HASH", &data,
                               NULL, error))
        return FALSE;
      memcpy (words, data, sizeof words);
      count = words[1];
    }
  else
    {
      ah_elf_set_malformed (error, image->path,
                            "DT_SYMTAB without a hash table (DT_GNU_HASH or DT_HASH)");
      return FALSE;
    }

  if (!g_uint64_checked_mul (&length, count, sizeof (Elf64_Sym)))
    length = G_MAXUINT64;
  if (!ah_elf_map_address (image, dynamic->symtab.value, length, "DT_SYMTAB", &data, NULL,
                           error))
    return FALSE;
  image->dynsym.entries = data;
  image->dynsym.n_symbols = (gsize) count;

  if (!ah_elf_map_address (image, dynamic->strtab.value, dynamic->strsz.value, "DT_STRTAB",
                           &data, NULL, error))
    return FALSE;
  image->dynsym.names = (const char *) data;
  image->dynsym.names_size = (gsize) dynamic->strsz.value;
  return TRUE;
}

/* The full symbol table names the local functions constructors usually
 * are; a stripped file has none, which is no error. */
static gboolean
ah_elf_image_parse_symtab (AhElfImage *image, GError **error)
{
  const Elf64_Shdr *symtab = NULL;
  const Elf64_Shdr *strtab;

  image->symtab.what = ".symtab";
  for (gsize i = 0; i < image->n_sections && symtab == NULL; i++)
    {
      if (image->sections[i].sh_type == SHT_SYMTAB)
        symtab = &image->sections[i];
    }
  if (symtab == NULL)
    return TRUE;

  if (symtab->sh_entsize != sizeof (Elf64_Sym))
    {
      ah_elf_set_malformed (error, image->path,
                            ".symtab entries are %" G_GUINT64_FORMAT " bytes, not %u",
                            (guint64) symtab->sh_entsize, (guint) sizeof (Elf64_Sym));
      return FALSE;
    }
  if (symtab->sh_size % sizeof (Elf64_Sym) != 0)
    {
      ah_elf_set_malformed (error, image->path,
                            ".symtab is %" G_GUINT64_FORMAT " bytes, not a whole number of "
                            "entries", (guint64) symtab->sh_size);
      return FALSE;
    }
  if (!ah_elf_range_fits (symtab->sh_offset, symtab->sh_size, image->size))
    {
      ah_elf_set_malformed (error, image->path, ".symtab extends past the end of the file");
      return FALSE;
    }
  if (symtab->sh_link >= image->n_sections
      || image->sections[symtab->sh_link].sh_type != SHT_STRTAB)
    {
      ah_elf_set_malformed (error, image->path,
                            ".symtab names its string table as section %u, which is none",
                            (guint) symtab->sh_link);
      return FALSE;
    }
  strtab = &image->sections[symtab->sh_link];
  if (!ah_elf_range_fits (strtab->sh_offset, strtab->sh_size, image->size))
    {
      ah_elf_set_malformed (error, image->path,
                            "the string table of .symtab extends past the end of the file");
      return FALSE;
    }

  image->symtab.entries = image->data + symtab->sh_offset;
  image->symtab.n_symbols = (gsize) (symtab->sh_size / sizeof (Elf64_Sym));
  image->symtab.names = (const char *) image->data + strtab->sh_offset;
  image->symtab.names_size = (gsize) strtab->sh_size;
  return TRUE;
}

static void
ah_elf_symbols_get (const AhElfSymbols *symbols, gsize index, Elf64_Sym *ret_symbol)
{
  memcpy (ret_symbol, symbols->entries + index * sizeof (Elf64_Sym), sizeof *ret_symbol);
}

static const char *
ah_elf_symbols_get_name (AhElfImage *image, const AhElfSymbols *symbols, gsize index,
                         const Elf64_Sym *symbol, GError **error)
{
  const char *name = ah_elf_string_at (symbols->names, symbols->names_size, symbol->st_name);

  if (name == NULL)
    ah_elf_set_malformed (error, image->path,
                          "the name of %s symbol %" G_GSIZE_FORMAT " is outside its string table",
                          symbols->what, index);
  return name;
}

/* The address of a section by name, for telling the toolchain's .init
 * and .fini from a function set with -Wl,-init in a stripped file. */
static gboolean
ah_elf_find_section_address (AhElfImage *image, const char *name, guint64 *ret_address)
{
  for (gsize i = 0; i < image->n_sections; i++)
    {
      const char *section_name = ah_elf_string_at (image->section_names,
                                                   image->section_names_size,
                                                   image->sections[i].sh_name);

      if (section_name != NULL && strcmp (section_name, name) == 0)
        {
          *ret_address = image->sections[i].sh_addr;
          return TRUE;
        }
    }
  return FALSE;
}

/* Reads DT_INIT_ARRAY or DT_FINI_ARRAY. Their slots hold addresses the
 * loader relocates: with RELA relocations the file's own value may be
 * zero and the address is in the relocation (filled in afterwards). */
static gboolean
ah_elf_read_function_array (AhElfImage *image, const AhElfDynValue *array,
                            const AhElfDynValue *array_size, const char *what,
                            GArray *functions, GError **error)
{
  const guint8 *data = NULL;
  guint64 size;

  if (!array->present)
    return TRUE;
  size = array_size->present ? array_size->value : 0;
  if (size % sizeof (guint64) != 0)
    {
      ah_elf_set_malformed (error, image->path,
                            "%sSZ is %" G_GUINT64_FORMAT ", not a whole number of addresses",
                            what, size);
      return FALSE;
    }
  if (size == 0)
    return TRUE;
  if (!ah_elf_map_address (image, array->value, size, what, &data, NULL, error))
    return FALSE;

  for (guint64 i = 0; i < size / sizeof (guint64); i++)
    {
      AhElfFunction function = { 0 };

      memcpy (&function.address, data + i * sizeof (guint64), sizeof function.address);
      g_array_append_val (functions, function);
    }
  return TRUE;
}

/* Applies the RELA relocations that land in the function arrays: a
 * relative one (no symbol) puts its addend there; one against a symbol
 * puts the symbol's value plus the addend, and names the function. REL
 * and RELR relocations keep their addend in the slot itself, which
 * ah_elf_read_function_array() already read. */
static gboolean
ah_elf_apply_relocations (AhElfImage *image, const AhElfDynValue *arrays[2],
                          GArray *functions[2], GError **error)
{
  const AhElfDynamic *dynamic = &image->dynamic;
  const guint8 *data = NULL;
  guint64 count;

  if (!dynamic->rela.present)
    return TRUE;
  if (!dynamic->relasz.present)
    {
      ah_elf_set_malformed (error, image->path, "DT_RELA without DT_RELASZ");
      return FALSE;
    }
  if (dynamic->relaent.present && dynamic->relaent.value != sizeof (Elf64_Rela))
    {
      ah_elf_set_malformed (error, image->path, "DT_RELAENT is %" G_GUINT64_FORMAT ", not %u",
                            dynamic->relaent.value, (guint) sizeof (Elf64_Rela));
      return FALSE;
    }
  if (!ah_elf_map_address (image, dynamic->rela.value, dynamic->relasz.value, "DT_RELA",
                           &data, NULL, error))
    return FALSE;

  count = dynamic->relasz.value / sizeof (Elf64_Rela);
  for (guint64 i = 0; i < count; i++)
    {
      Elf64_Rela relocation;
      guint64 symbol_index;

      memcpy (&relocation, data + i * sizeof relocation, sizeof relocation);
      /* R_*_NONE is 0 on every architecture. */
      if (ELF64_R_TYPE (relocation.r_info) == 0)
        continue;
      symbol_index = ELF64_R_SYM (relocation.r_info);

      for (guint a = 0; a < 2; a++)
        {
          AhElfFunction *function;
          guint64 delta;

          if (functions[a]->len == 0 || relocation.r_offset < arrays[a]->value)
            continue;
          delta = relocation.r_offset - arrays[a]->value;
          if (delta % sizeof (guint64) != 0 || delta / sizeof (guint64) >= functions[a]->len)
            continue;

          function = &g_array_index (functions[a], AhElfFunction, delta / sizeof (guint64));
          function->address = (guint64) relocation.r_addend;
          if (symbol_index != 0)
            {
              Elf64_Sym symbol;
              const char *name;

              if (symbol_index >= image->dynsym.n_symbols)
                {
                  ah_elf_set_malformed (error, image->path,
                                        "relocation %" G_GUINT64_FORMAT " uses symbol %"
                                        G_GUINT64_FORMAT " of %" G_GSIZE_FORMAT, i, symbol_index,
                                        image->dynsym.n_symbols);
                  return FALSE;
                }
              ah_elf_symbols_get (&image->dynsym, (gsize) symbol_index, &symbol);
              name = ah_elf_symbols_get_name (image, &image->dynsym, (gsize) symbol_index,
                                              &symbol, error);
              if (name == NULL)
                return FALSE;
              function->address += symbol.st_value;
              if (*name != '\0')
                function->name = name;
            }
        }
    }
  return TRUE;
}

/* Names, from @symbols, the functions of @wanted (address -> name) still
 * without one. Only functions' names are looked at, so a damaged name of
 * some other symbol does not stop the lint. */
static gboolean
ah_elf_name_functions (AhElfImage *image, const AhElfSymbols *symbols, GHashTable *wanted,
                       GError **error)
{
  for (gsize i = 1; i < symbols->n_symbols; i++)
    {
      Elf64_Sym symbol;
      gpointer key = NULL;
      gpointer value = NULL;
      guint type;
      const char *name;

      ah_elf_symbols_get (symbols, i, &symbol);
      type = ELF64_ST_TYPE (symbol.st_info);
      if (symbol.st_shndx == SHN_UNDEF
          || (type != STT_FUNC && type != STT_NOTYPE && type != STT_GNU_IFUNC))
        continue;
      if (!g_hash_table_lookup_extended (wanted, &symbol.st_value, &key, &value)
          || value != NULL)
        continue;

      name = ah_elf_symbols_get_name (image, symbols, i, &symbol, error);
      if (name == NULL)
        return FALSE;
      if (*name != '\0')
        g_hash_table_insert (wanted, key, (gpointer) name);
    }
  return TRUE;
}

/* The functions every object gets from the toolchain, whatever its
 * author wrote: crti.o's _init and _fini, crtbeginS.o's entries (which
 * gcc links into every shared object, and clang too on GNU systems). */
static gboolean
ah_elf_function_is_toolchain_default (const char *name)
{
  static const char *const defaults[] = {
    "_init", "_fini",
    "frame_dummy", "register_tm_clones",
    "__do_global_dtors_aux", "deregister_tm_clones",
  };
  const char *rest = name;
  guint64 priority;

  for (gsize i = 0; i < G_N_ELEMENTS (defaults); i++)
    {
      if (strcmp (name, defaults[i]) == 0)
        return TRUE;
    }

  /* Instrumentation: gcc's sanitizers and coverage register
   * "_sub_I_00099_0" (C), "_GLOBAL__sub_I_00100_0_file.cc" (C++) at a
   * priority of 0..100, which is reserved for the implementation (gcc
   * warns when user code asks for one). Clang's are "asan.module_ctor"
   * and the like: not a name C could give a function. */
  if (g_str_has_prefix (rest, "_GLOBAL_"))
    rest += strlen ("_GLOBAL_");
  if ((g_str_has_prefix (rest, "_sub_I_") || g_str_has_prefix (rest, "_sub_D_"))
      && strlen (rest) >= 13 && rest[12] == '_')
    {
      g_autofree char *digits = g_strndup (rest + 7, 5);

      if (g_ascii_string_to_unsigned (digits, 10, 0, 100, &priority, NULL))
        return TRUE;
    }
  return g_str_has_suffix (name, ".module_ctor") || g_str_has_suffix (name, ".module_dtor");
}

static AhElfFinding *
ah_elf_finding_new (AhElfFindingKind kind, const char *symbol, guint64 address, char *message)
{
  AhElfFinding *finding = g_new0 (AhElfFinding, 1);

  finding->kind = kind;
  finding->symbol = g_strdup (symbol);
  finding->address = address;
  finding->message = message;   /* transfer full */
  return finding;
}

static void
ah_elf_report_function (GPtrArray *findings, AhElfFindingKind kind, const AhElfFunction *function)
{
  const char *what = kind == AH_ELF_FINDING_CONSTRUCTOR ? "constructor" : "destructor";
  const char *why = kind == AH_ELF_FINDING_CONSTRUCTOR
                    ? "runs on every load (hot reload loads the plugin again)"
                    : "runs on every unload (hot reload unloads the old version)";
  char *message;

  if (function->name != NULL)
    {
      g_autofree char *shown = ah_elf_display_name (function->name);

      message = g_strdup_printf ("%s function '%s' %s", what, shown, why);
    }
  else
    {
      message = g_strdup_printf ("%s function at 0x%" G_GINT64_MODIFIER "x %s", what,
                                 function->address, why);
    }
  g_ptr_array_add (findings, ah_elf_finding_new (kind, function->name, function->address,
                                                 message));
}

/* DT_INIT or DT_FINI: the toolchain's _init / _fini unless it points
 * elsewhere (-Wl,-init=NAME). Without a name, the section of that name
 * tells; with neither, nothing says it is not the toolchain's. */
static void
ah_elf_report_single_function (AhElfImage *image, GPtrArray *findings, AhElfFindingKind kind,
                               const AhElfFunction *function, const char *section)
{
  guint64 section_address;

  if (function->name != NULL)
    {
      if (!ah_elf_function_is_toolchain_default (function->name))
        ah_elf_report_function (findings, kind, function);
      return;
    }
  if (ah_elf_find_section_address (image, section, &section_address)
      && section_address != function->address)
    ah_elf_report_function (findings, kind, function);
}

/* One array's functions beyond the toolchain's, in the order the loader
 * calls them (DT_FINI_ARRAY runs backwards). In a stripped file nothing
 * is named: crtbeginS.o puts exactly one function in each array, so the
 * first unnamed one is taken for it (without names, the first is the
 * likeliest: it is linked before the author's objects). */
static void
ah_elf_report_array (GPtrArray *findings, AhElfFindingKind kind, GArray *functions,
                     gboolean backwards)
{
  gboolean default_named = FALSE;
  gint64 first_unnamed = -1;

  for (guint i = 0; i < functions->len; i++)
    {
      const AhElfFunction *function = &g_array_index (functions, AhElfFunction, i);

      if (function->name != NULL && ah_elf_function_is_toolchain_default (function->name))
        default_named = TRUE;
      if (function->name == NULL && first_unnamed < 0)
        first_unnamed = i;
    }

  for (guint n = 0; n < functions->len; n++)
    {
      guint i = backwards ? functions->len - 1 - n : n;
      const AhElfFunction *function = &g_array_index (functions, AhElfFunction, i);

      if (function->name != NULL && ah_elf_function_is_toolchain_default (function->name))
        continue;
      if (function->name == NULL && !default_named && (gint64) i == first_unnamed)
        continue;
      ah_elf_report_function (findings, kind, function);
    }
}

static gboolean
ah_elf_lint_functions (AhElfImage *image, GPtrArray *findings, GError **error)
{
  const AhElfDynamic *dynamic = &image->dynamic;
  const AhElfDynValue *arrays[2] = { &dynamic->init_array, &dynamic->fini_array };
  g_autoptr(GArray) init_functions = g_array_new (FALSE, TRUE, sizeof (AhElfFunction));
  g_autoptr(GArray) fini_functions = g_array_new (FALSE, TRUE, sizeof (AhElfFunction));
  g_autoptr(GHashTable) wanted = g_hash_table_new (g_int64_hash, g_int64_equal);
  GArray *functions[2] = { init_functions, fini_functions };
  AhElfFunction init = { dynamic->init.value, NULL };
  AhElfFunction fini = { dynamic->fini.value, NULL };

  if (!ah_elf_read_function_array (image, &dynamic->init_array, &dynamic->init_arraysz,
                                   "DT_INIT_ARRAY", init_functions, error)
      || !ah_elf_read_function_array (image, &dynamic->fini_array, &dynamic->fini_arraysz,
                                      "DT_FINI_ARRAY", fini_functions, error)
      || !ah_elf_apply_relocations (image, arrays, functions, error))
    return FALSE;

  /* Keys point into the arrays, which no longer grow. */
  for (guint a = 0; a < 2; a++)
    {
      for (guint i = 0; i < functions[a]->len; i++)
        {
          AhElfFunction *function = &g_array_index (functions[a], AhElfFunction, i);

          if (function->name == NULL)
            g_hash_table_insert (wanted, &function->address, NULL);
        }
    }
  if (dynamic->init.present)
    g_hash_table_insert (wanted, &init.address, NULL);
  if (dynamic->fini.present)
    g_hash_table_insert (wanted, &fini.address, NULL);

  if (!ah_elf_name_functions (image, &image->symtab, wanted, error)
      || !ah_elf_name_functions (image, &image->dynsym, wanted, error))
    return FALSE;

  for (guint a = 0; a < 2; a++)
    {
      for (guint i = 0; i < functions[a]->len; i++)
        {
          AhElfFunction *function = &g_array_index (functions[a], AhElfFunction, i);

          if (function->name == NULL)
            function->name = g_hash_table_lookup (wanted, &function->address);
        }
    }
  init.name = g_hash_table_lookup (wanted, &init.address);
  fini.name = g_hash_table_lookup (wanted, &fini.address);

  /* The loader's order: DT_INIT, then DT_INIT_ARRAY; on unload
   * DT_FINI_ARRAY backwards, then DT_FINI. */
  if (dynamic->init.present)
    ah_elf_report_single_function (image, findings, AH_ELF_FINDING_CONSTRUCTOR, &init, ".init");
  ah_elf_report_array (findings, AH_ELF_FINDING_CONSTRUCTOR, init_functions, FALSE);
  ah_elf_report_array (findings, AH_ELF_FINDING_DESTRUCTOR, fini_functions, TRUE);
  if (dynamic->fini.present)
    ah_elf_report_single_function (image, findings, AH_ELF_FINDING_DESTRUCTOR, &fini, ".fini");
  return TRUE;
}

/* Symbols the static linker defines in every object: binding to them is
 * meaningless, and a plugin author cannot avoid them. The __*__ forms
 * are ARM's and AArch64's. */
static gboolean
ah_elf_symbol_is_linker_defined (const char *name)
{
  static const char *const names[] = {
    "_init", "_fini", "__bss_start", "_edata", "_end",
    "__bss_start__", "_bss_end__", "__end__",
  };

  for (gsize i = 0; i < G_N_ELEMENTS (names); i++)
    {
      if (strcmp (name, names[i]) == 0)
        return TRUE;
    }
  return FALSE;
}

typedef struct {
  gboolean    thread_destructors;
  GPtrArray  *unique;       /* (element-type AhElfFinding) */
  GPtrArray  *exports;      /* (element-type AhElfFinding) */
} AhElfSymbolFindings;

static gboolean
ah_elf_lint_dynamic_symbols (AhElfImage *image, AhElfSymbolFindings *found, GError **error)
{
  const AhElfSymbols *dynsym = &image->dynsym;

  for (gsize i = 1; i < dynsym->n_symbols; i++)
    {
      Elf64_Sym symbol;
      guint binding;
      guint type;
      const char *name;
      g_autofree char *shown = NULL;

      ah_elf_symbols_get (dynsym, i, &symbol);
      binding = ELF64_ST_BIND (symbol.st_info);
      type = ELF64_ST_TYPE (symbol.st_info);
      if (binding != STB_GLOBAL && binding != STB_WEAK && binding != STB_GNU_UNIQUE)
        continue;
      if (type == STT_SECTION || type == STT_FILE)
        continue;

      name = ah_elf_symbols_get_name (image, dynsym, i, &symbol, error);
      if (name == NULL)
        return FALSE;

      if (symbol.st_shndx == SHN_UNDEF)
        {
          /* glibc counts the destructors __cxa_thread_atexit_impl()
           * registers against the object and dlclose() leaves it mapped
           * while any is pending; C++ thread_local reaches it through
           * libstdc++'s __cxa_thread_atexit. */
          if (strcmp (name, "__cxa_thread_atexit_impl") == 0
              || strcmp (name, "__cxa_thread_atexit") == 0)
            found->thread_destructors = TRUE;
          continue;
        }

      /* A named version node (LIBFOO_1.0 { ... }) is an absolute symbol
       * of value and size 0: nothing to bind to. */
      if (symbol.st_shndx == SHN_ABS && symbol.st_value == 0 && symbol.st_size == 0)
        continue;
      if (*name == '\0')
        continue;

      shown = ah_elf_display_name (name);
      if (binding == STB_GNU_UNIQUE)
        {
          g_ptr_array_add (found->unique,
                           ah_elf_finding_new (AH_ELF_FINDING_UNIQUE_SYMBOL, name, 0,
                                               g_strdup_printf ("unique symbol '%s': the dynamic "
                                                                "loader never unloads this object",
                                                                shown)));
          continue;
        }
      if (strcmp (name, AH_PLUGIN_ENTRY_SYMBOL) == 0 || ah_elf_symbol_is_linker_defined (name))
        continue;
      /* ASan's one-definition-rule indicators (gcc's "__odr_asan.VAR",
       * clang's "__odr_asan_gen_VAR"), one per exported variable, which
       * is reported itself. */
      if (g_str_has_prefix (name, "__odr_asan"))
        continue;
      g_ptr_array_add (found->exports,
                       ah_elf_finding_new (AH_ELF_FINDING_EXPORT, name, 0,
                                           g_strdup_printf ("exports '%s' besides %s: another "
                                                            "plugin or the host could bind to it",
                                                            shown, AH_PLUGIN_ENTRY_SYMBOL)));
    }
  return TRUE;
}

static void
ah_elf_move_findings (GPtrArray *to, GPtrArray *from)
{
  for (guint i = 0; i < from->len; i++)
    g_ptr_array_add (to, g_steal_pointer (&g_ptr_array_index (from, i)));
  g_ptr_array_set_size (from, 0);
}

/**
 * ah__elf_lint:
 * @path: the plugin file
 * @error: return location for an #AH_PLUGIN_ERROR
 *
 * Returns: (transfer full) (element-type AhElfFinding): the findings,
 * what prevents unloading first, or %NULL with @error set
 */
GPtrArray *
ah__elf_lint (const char *path, GError **error)
{
  g_auto(AhElfImage) image = { 0 };
  g_autoptr(GPtrArray) findings = NULL;
  g_autoptr(GPtrArray) functions = NULL;
  g_autoptr(GPtrArray) unique = NULL;
  g_autoptr(GPtrArray) exports = NULL;
  AhElfSymbolFindings found = { 0 };
  gboolean tls = FALSE;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (!ah_elf_image_load (&image, path, error)
      || !ah_elf_image_parse_header (&image, error)
      || !ah_elf_image_parse_segments (&image, error)
      || !ah_elf_image_parse_sections (&image, error)
      || !ah_elf_image_parse_dynamic (&image, error)
      || !ah_elf_image_parse_dynsym (&image, error)
      || !ah_elf_image_parse_symtab (&image, error))
    return NULL;

  functions = g_ptr_array_new_with_free_func ((GDestroyNotify) ah__elf_finding_free);
  unique = g_ptr_array_new_with_free_func ((GDestroyNotify) ah__elf_finding_free);
  exports = g_ptr_array_new_with_free_func ((GDestroyNotify) ah__elf_finding_free);
  found.unique = unique;
  found.exports = exports;
  /* A PIE is ET_DYN too, but glibc refuses to dlopen() one. */
  if (image.dynamic.flags_1.present && (image.dynamic.flags_1.value & DF_1_PIE) != 0)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_LOAD,
                   "%s: not a shared object: a position-independent executable", path);
      return NULL;
    }

  if (!ah_elf_lint_functions (&image, functions, error)
      || !ah_elf_lint_dynamic_symbols (&image, &found, error))
    return NULL;

  for (gsize i = 0; i < image.n_segments; i++)
    tls = tls || image.segments[i].p_type == PT_TLS;

  findings = g_ptr_array_new_with_free_func ((GDestroyNotify) ah__elf_finding_free);
  if (image.dynamic.flags_1.present && (image.dynamic.flags_1.value & DF_1_NODELETE) != 0)
    g_ptr_array_add (findings,
                     ah_elf_finding_new (AH_ELF_FINDING_NODELETE, NULL, 0,
                                         g_strdup ("is marked NODELETE (-z nodelete): dlclose "
                                                   "never unloads it, so a reload cannot "
                                                   "replace its code")));
  ah_elf_move_findings (findings, unique);
  if (found.thread_destructors)
    g_ptr_array_add (findings,
                     ah_elf_finding_new (AH_ELF_FINDING_THREAD_DESTRUCTORS, NULL, 0,
                                         g_strdup ("registers thread-local destructors: the "
                                                   "object cannot be unloaded while those "
                                                   "threads live")));
  ah_elf_move_findings (findings, functions);
  if (tls)
    g_ptr_array_add (findings,
                     ah_elf_finding_new (AH_ELF_FINDING_TLS, NULL, 0,
                                         g_strdup ("uses thread-local storage: threads that "
                                                   "ran its code keep it until they exit")));
  /* Initial-exec TLS comes out of the space glibc reserves when a thread
   * starts; dlopen() fails ("cannot allocate memory in static TLS
   * block") once earlier loads have used it up. */
  if (image.dynamic.flags.present && (image.dynamic.flags.value & DF_STATIC_TLS) != 0)
    g_ptr_array_add (findings,
                     ah_elf_finding_new (AH_ELF_FINDING_STATIC_TLS, NULL, 0,
                                         g_strdup ("uses initial-exec thread-local storage "
                                                   "(DF_STATIC_TLS): every load takes room "
                                                   "in the small static TLS area, and "
                                                   "dlopen fails once it is used up")));
  ah_elf_move_findings (findings, exports);

  return g_steal_pointer (&findings);
}

void
ah__elf_finding_free (AhElfFinding *finding)
{
  if (finding == NULL)
    return;
  g_free (finding->symbol);
  g_free (finding->message);
  g_free (finding);
}

gboolean
ah__elf_finding_prevents_unload (const AhElfFinding *finding)
{
  g_return_val_if_fail (finding != NULL, FALSE);

  switch (finding->kind)
    {
    case AH_ELF_FINDING_NODELETE:
    case AH_ELF_FINDING_UNIQUE_SYMBOL:
    case AH_ELF_FINDING_THREAD_DESTRUCTORS:
      return TRUE;
    case AH_ELF_FINDING_CONSTRUCTOR:
    case AH_ELF_FINDING_DESTRUCTOR:
    case AH_ELF_FINDING_TLS:
    case AH_ELF_FINDING_STATIC_TLS:
    case AH_ELF_FINDING_EXPORT:
      return FALSE;
    }
  return FALSE;
}

/**
 * ah_plugin_lint:
 * @path: the plugin file
 * @error: return location for an #AH_PLUGIN_ERROR
 *
 * Reads @path as an ELF file, without loading it, and says what would
 * make the plugin unsafe to unload, reload or keep isolated.
 *
 * Returns: (transfer full): one line per finding, an empty array when
 * there is nothing to say, or %NULL with @error set
 */
GStrv
ah_plugin_lint (const char *path, GError **error)
{
  g_autoptr(GPtrArray) findings = NULL;
  GStrv lines;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  findings = ah__elf_lint (path, error);
  if (findings == NULL)
    return NULL;

  lines = g_new0 (char *, findings->len + 1);
  for (guint i = 0; i < findings->len; i++)
    {
      AhElfFinding *finding = g_ptr_array_index (findings, i);

      lines[i] = g_steal_pointer (&finding->message);
    }
  return lines;
}
