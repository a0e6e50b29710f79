/* SPDX-License-Identifier: MIT */
/* The walk-through of docs/writing-plugins.md (section 3), done as a new
 * user does it: `agenthost new-plugin greeter`, then the guide's blocks
 * put in place of the parts they replace, then build, test, run and
 * validate. The build compiles the blocks already; this proves they fit
 * the project the scaffold writes today, and that the outputs the guide
 * shows are the real ones. Needs meson and ninja on PATH (skipped
 * otherwise), the build tree's uninstalled pkg-config file, and
 * $AGENTHOST (meson test sets it). */
#include <gio/gio.h>

#include <string.h>

#define WALKTHROUGH_START "## 3. Walk-through"
#define WALKTHROUGH_END   "## 4. "

typedef struct {
  GPtrArray *c_blocks;        /* (element-type utf8) in document order */
  char      *manifest;        /* the yaml block */
  char      *validate_error;  /* the error line validate prints */
  GPtrArray *registrations;   /* (element-type utf8) the g_test_add_func () calls */
} Walkthrough;

static void
walkthrough_clear (Walkthrough *self)
{
  g_clear_pointer (&self->c_blocks, g_ptr_array_unref);
  g_clear_pointer (&self->manifest, g_free);
  g_clear_pointer (&self->validate_error, g_free);
  g_clear_pointer (&self->registrations, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Walkthrough, walkthrough_clear)

static char *
read_text (const char *path)
{
  g_autoptr(GError) error = NULL;
  char *text = NULL;

  g_file_get_contents (path, &text, NULL, &error);
  g_assert_no_error (error);
  return text;
}

static void
write_text (const char *path,
            const char *text)
{
  g_autoptr(GError) error = NULL;

  g_file_set_contents (path, text, -1, &error);
  g_assert_no_error (error);
}

/* Reads section 3's fenced blocks and the registrations its prose names. */
static void
walkthrough_load (Walkthrough *self)
{
  g_autofree char *path = g_test_build_filename (G_TEST_DIST, "..", "docs",
                                                 "writing-plugins.md", NULL);
  g_autofree char *markdown = read_text (path);
  const char *start = strstr (markdown, WALKTHROUGH_START);
  const char *end = start != NULL ? strstr (start, WALKTHROUGH_END) : NULL;
  g_autofree char *section = NULL;
  g_auto(GStrv) lines = NULL;
  g_autoptr(GString) block = NULL;
  g_autoptr(GRegex) registration = NULL;
  g_autoptr(GMatchInfo) match = NULL;
  char *language = NULL;

  g_assert_nonnull (end);
  section = g_strndup (start, end - start);
  self->c_blocks = g_ptr_array_new_with_free_func (g_free);
  self->registrations = g_ptr_array_new_with_free_func (g_free);

  lines = g_strsplit (section, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      if (block == NULL && g_str_has_prefix (lines[i], "```"))
        {
          language = lines[i] + 3;
          block = g_string_new (NULL);
        }
      else if (block != NULL && g_str_equal (lines[i], "```"))
        {
          char *text = g_string_free (g_steal_pointer (&block), FALSE);

          if (g_str_equal (language, "c"))
            g_ptr_array_add (self->c_blocks, g_steal_pointer (&text));
          else if (g_str_equal (language, "yaml"))
            {
              g_free (self->manifest);
              self->manifest = g_steal_pointer (&text);
            }
          else if (g_str_has_prefix (text, "$ agenthost validate manifest.yaml\n"))
            self->validate_error = g_strdup (strchr (text, '\n') + 1);
          g_free (text);
        }
      else if (block != NULL)
        g_string_append_printf (block, "%s\n", lines[i]);
    }

  /* Named inline in the prose, as `g_test_add_func (...);`. */
  registration = g_regex_new ("`(g_test_add_func \\([^`]*\\);)`", 0, 0, NULL);
  g_regex_match (registration, section, 0, &match);
  while (g_match_info_matches (match))
    {
      g_ptr_array_add (self->registrations, g_match_info_fetch (match, 1));
      g_match_info_next (match, NULL);
    }

  g_assert_cmpuint (self->c_blocks->len, ==, 4);
  g_assert_nonnull (self->manifest);
  g_assert_nonnull (self->validate_error);
  g_assert_cmpuint (self->registrations->len, ==, 2);
}

/* Replaces, in @text, the part that runs from @start_marker to the end
 * of @end_marker (both included) with @replacement. A marker that is
 * not there means the scaffold changed under the guide. */
static char *
replace_part (char       *text,
              const char *what,
              const char *start_marker,
              const char *end_marker,
              const char *replacement)
{
  g_autofree char *owned = text;
  const char *start = strstr (text, start_marker);
  const char *end = start != NULL ? strstr (start, end_marker) : NULL;

  if (end == NULL)
    g_error ("the scaffold's %s has no '%s' ... '%s': bring section 3 of "
             "docs/writing-plugins.md up to date with the scaffold", what, start_marker,
             end_marker);
  end += strlen (end_marker);
  return g_strdup_printf ("%.*s%s%s", (int) (start - text), text, replacement, end);
}

/* Inserts @insertion before @marker in @text. */
static char *
insert_before (char       *text,
               const char *what,
               const char *marker,
               const char *insertion)
{
  g_autofree char *owned = text;
  const char *at = strstr (text, marker);

  if (at == NULL)
    g_error ("the scaffold's %s has no '%s': bring section 3 of docs/writing-plugins.md "
             "up to date with the scaffold", what, marker);
  return g_strdup_printf ("%.*s%s%s", (int) (at - text), text, insertion, at);
}

typedef struct {
  int   status;
  char *out;
  char *err;
} Result;

static void
result_clear (Result *self)
{
  g_clear_pointer (&self->out, g_free);
  g_clear_pointer (&self->err, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (Result, result_clear)

static void
run (GSubprocessLauncher *launcher,
     const char * const  *argv,
     int                  expected_status,
     Result              *result)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) process = g_subprocess_launcher_spawnv (launcher, argv, &error);

  g_assert_no_error (error);
  g_subprocess_communicate_utf8 (process, NULL, NULL, &result->out, &result->err, &error);
  g_assert_no_error (error);
  g_assert_true (g_subprocess_get_if_exited (process));
  result->status = g_subprocess_get_exit_status (process);
  if (result->status != expected_status)
    g_error ("%s exited %d, expected %d\nstdout:\n%s\nstderr:\n%s", argv[0], result->status,
             expected_status, result->out, result->err);
}

static void
test_walkthrough (void)
{
  const char *agenthost = g_getenv ("AGENTHOST");
  g_autofree char *meson = g_find_program_in_path ("meson");
  g_autofree char *ninja = g_find_program_in_path ("ninja");
  g_autofree char *pc_dir = g_test_build_filename (G_TEST_BUILT, "..", "meson-uninstalled", NULL);
  g_autofree char *lib_dir = NULL;
  g_autofree char *root = g_build_filename (g_get_user_data_dir (), "walkthrough", NULL);
  g_autofree char *project = g_build_filename (root, "greeter", NULL);
  g_autofree char *source_path = g_build_filename (project, "greeter.c", NULL);
  g_autofree char *test_path = g_build_filename (project, "tests", "test-greeter.c", NULL);
  g_autofree char *manifest_path = g_build_filename (project, "manifest.yaml", NULL);
  g_autoptr(GSubprocessLauncher) launcher = NULL;
  g_auto(Walkthrough) walkthrough = { 0 };
  g_autofree char *source = NULL;
  g_autofree char *test = NULL;
  g_autofree char *scaffold_manifest = NULL;
  g_autofree char *manifest = NULL;
  g_autofree char *bad_manifest = NULL;
  char *agents;

  g_test_summary ("Section 3 of docs/writing-plugins.md, applied to a fresh `agenthost "
                  "new-plugin greeter`, builds without warnings, passes its five tests, runs, "
                  "and validate prints the error line the guide shows");
  if (agenthost == NULL || meson == NULL || ninja == NULL)
    {
      g_test_skip (agenthost == NULL ? "AGENTHOST is not set (meson test sets it)"
                   : meson == NULL ? "meson is not on PATH" : "ninja is not on PATH");
      return;
    }
  walkthrough_load (&walkthrough);
  lib_dir = g_path_get_dirname (agenthost);
  g_assert_cmpint (g_mkdir_with_parents (root, 0700), ==, 0);

  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_subprocess_launcher_setenv (launcher, "PKG_CONFIG_PATH", pc_dir, TRUE);
  g_subprocess_launcher_setenv (launcher, "LD_LIBRARY_PATH", lib_dir, TRUE);
  g_subprocess_launcher_set_cwd (launcher, root);
  {
    g_auto(Result) result = { 0 };
    const char *argv[] = { agenthost, "new-plugin", "greeter", NULL };

    run (launcher, argv, 0, &result);
  }

  /* The guide's blocks, in place of what they replace. The functions
   * are replaced up to their closing brace; each block ends with one. */
  source = replace_part (read_text (source_path), "greeter.c", "#include <agenthost/agenthost.h>\n",
                         "AH_CONFIG_KEY_END\n};\n", walkthrough.c_blocks->pdata[0]);
  source = replace_part (source, "greeter.c", "static gboolean\ngreeter_agent_init",
                         "\n}\n", walkthrough.c_blocks->pdata[1]);
  source = replace_part (source, "greeter.c", "static gboolean\ngreeter_handle_message",
                         "\n}\n", walkthrough.c_blocks->pdata[2]);
  write_text (source_path, source);

  test = insert_before (read_text (test_path), "tests/test-greeter.c", "int\nmain",
                        walkthrough.c_blocks->pdata[3]);
  for (guint i = 0; i < walkthrough.registrations->len; i++)
    {
      g_autofree char *line = g_strdup_printf ("  %s\n", (char *) walkthrough.registrations->pdata[i]);

      test = insert_before (test, "tests/test-greeter.c", "\n  return g_test_run ();", line);
    }
  write_text (test_path, test);

  /* The guide shows the manifest from `agents:` to its end. */
  scaffold_manifest = read_text (manifest_path);
  agents = strstr (scaffold_manifest, "\nagents:\n");
  if (agents == NULL)
    g_error ("the scaffold's manifest.yaml has no 'agents:' line: bring section 3 of "
             "docs/writing-plugins.md up to date with the scaffold");
  agents[1] = '\0';
  manifest = g_strconcat (scaffold_manifest, walkthrough.manifest, NULL);
  write_text (manifest_path, manifest);

  /* Build and test as the guide says, against this build of agenthost. */
  g_subprocess_launcher_set_cwd (launcher, project);
  {
    g_auto(Result) result = { 0 };
    const char *argv[] = {
      meson, "setup", "build", "--werror",
#if defined (__SANITIZE_ADDRESS__)
      /* An uninstrumented program cannot load this sanitized library. */
      "-Db_sanitize=address,undefined",
#endif
      NULL
    };

    run (launcher, argv, 0, &result);
  }
  {
    g_auto(Result) result = { 0 };
    const char *argv[] = { meson, "test", "-C", "build", "--print-errorlogs", NULL };

    run (launcher, argv, 0, &result);
    g_assert_nonnull (strstr (result.out, "5 subtests passed"));
  }
  {
    g_auto(Result) result = { 0 };
    const char *argv[] = { agenthost, "run", "manifest.yaml", NULL };

    run (launcher, argv, 0, &result);
    g_assert_nonnull (strstr (result.out, "greeter agent 0: ready to say 'Hello'\n"));
    g_assert_nonnull (strstr (result.out, "greeter agent 1: ready to say 'Hello'\n"));
    g_assert_nonnull (strstr (result.out, "stopped by idle, exit code 0"));
  }
  {
    g_auto(Result) result = { 0 };
    const char *argv[] = { agenthost, "inspect", "build/greeter.so", NULL };

    run (launcher, argv, 0, &result);
    g_assert_nonnull (strstr (result.out, "max_name"));
    g_assert_nonnull (strstr (result.out, "Longest name greeted, in bytes"));
    g_assert_cmpstr (result.err, ==, "");
  }

  /* The schema at work, word for word as the guide shows it. */
  g_assert_nonnull (strstr (manifest, "      max_name: 32\n"));
  bad_manifest = g_strdup (manifest);
  memcpy (strstr (bad_manifest, "max_name: 32") + strlen ("max_name: "), "0\n", 3);
  write_text (manifest_path, bad_manifest);
  {
    g_auto(Result) result = { 0 };
    const char *argv[] = { agenthost, "validate", "manifest.yaml", NULL };

    run (launcher, argv, 3, &result);
    g_assert_cmpstr (result.err, ==, walkthrough.validate_error);
  }
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  g_test_add_func ("/docs/walkthrough/greeter", test_walkthrough);

  return g_test_run ();
}
