/* agenthost: the command-line host.
 *
 * Built on the public API only (<agenthost/agenthost.h>), exactly as any
 * other embedding program would be: if the command needs something the
 * headers do not offer, the embedding API is missing it.
 *
 * SPDX-License-Identifier: MIT
 */
#include <agenthost/agenthost.h>

#include <glib-unix.h>
#include <glib/gstdio.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The bench plugin's message layouts, shared with `agenthost bench`. */
#include "../plugins/bench/bench-wire.h"

/* The exit statuses, documented in docs/cli.md and in `--help`. Scripts
 * branch on them, so they never change meaning. */
typedef enum {
  AGENTHOST_EXIT_OK = 0,
  AGENTHOST_EXIT_RUN_FAILED = 1,
  AGENTHOST_EXIT_USAGE = 2,
  AGENTHOST_EXIT_INVALID_MANIFEST = 3,
  AGENTHOST_EXIT_PLUGIN = 4,
  AGENTHOST_EXIT_FORCED = 130,   /* 128 + SIGINT, as shells report it */
} AgenthostExit;

/* g_timeout_add() counts in guint milliseconds. */
#define AGENTHOST_TIMEOUT_MAX_S ((gdouble) G_MAXUINT / 1000.0)

#define AGENTHOST_EXIT_STATUS_HELP                                             \
  "Exit status:\n"                                                             \
  "  0    success; also a clean stop by SIGINT, SIGTERM or --timeout\n"        \
  "  1    the run failed (the host did not start, e.g. an agent's init\n"      \
  "       failed; a required agent type exhausted its restart budget;\n"       \
  "       the run ended with an error), new-plugin could not write its\n"      \
  "       files, or reload found no host to signal\n"                          \
  "  2    usage error (unknown command or option, bad argument)\n"             \
  "  3    invalid manifest\n"                                                  \
  "  4    a plugin failed to load\n"                                           \
  "  130  forced exit by a second SIGINT while draining\n"                     \
  "  N    an agent stopped the run with exit code N (1-255)"

typedef struct _Command Command;

/* @args holds the command's own name first, then its arguments; the
 * command may rewrite it (option parsing removes what it consumes). */
typedef int (*CommandFunc) (const Command *command, GStrv *args);

struct _Command {
  const char  *name;
  const char  *parameter_string;   /* after "[OPTION...]" in the usage line */
  const char  *summary;            /* one line, for the command list */
  const char  *description;        /* what --help shows under the options */
  CommandFunc  func;
};

static int command_run      (const Command *command, GStrv *args);
static int command_validate (const Command *command, GStrv *args);
static int command_inspect  (const Command *command, GStrv *args);
static int command_new_plugin (const Command *command, GStrv *args);
static int command_reload   (const Command *command, GStrv *args);
static int command_bench    (const Command *command, GStrv *args);
static int command_help     (const Command *command, GStrv *args);

static const Command commands[] = {
  {
    "run", "[MANIFEST]",
    "Run a system (without MANIFEST: the built-in default one)",
    "Loads MANIFEST (or the built-in default system), loads its plugins,\n"
    "pre-warms every pool, runs until the system stops (an agent asks for\n"
    "it, the system goes idle when the manifest sets stop_when_idle, the\n"
    "manifest's run_timeout_ms or --timeout passes, or SIGINT/SIGTERM\n"
    "arrives), drains, and prints the run's summary on stdout.\n"
    "\n"
    "A first SIGINT or SIGTERM stops the run cleanly: no new message is\n"
    "accepted, what is in flight is handled, the summary is printed and\n"
    "the exit status is 0. A second SIGINT while draining exits at once\n"
    "with status 130.\n"
    "\n"
    "With --json -, the JSON summary goes to stdout instead of the text\n"
    "summary, and what agents print goes to stderr, so stdout is exactly\n"
    "one JSON document.\n"
    "\n"
    "Hot reload: with --watch (or the manifest's watch: true) a plugin is\n"
    "reloaded once its file has been quiet for the manifest's\n"
    "watch_debounce_ms (default 200) after a change. SIGHUP, or\n"
    "'agenthost reload NAME', reloads every plugin whose file changed.\n"
    "Either way the log says what was reloaded or why a new version was\n"
    "refused; a refused version never stops the run, the old one runs on.\n"
    "While running, the host's pid is in $XDG_RUNTIME_DIR/agenthost/NAME.pid\n"
    "(NAME: the manifest's name).\n"
    "\n"
    AGENTHOST_EXIT_STATUS_HELP,
    command_run,
  },
  {
    "reload", "[NAME]",
    "Make a running system reload the plugins whose files changed",
    "Sends SIGHUP to the running 'agenthost run' whose manifest is named\n"
    "NAME; it reloads every plugin whose file content changed and logs the\n"
    "outcome on its stderr. Without NAME, the only running system; when\n"
    "several are running, they are listed and one must be named. Hosts are\n"
    "found through their pid files in $XDG_RUNTIME_DIR/agenthost/.\n"
    "\n"
    AGENTHOST_EXIT_STATUS_HELP,
    command_reload,
  },
  {
    "validate", "FILE...",
    "Check manifests and their plugins, starting no agent",
    "For each FILE: parses and checks the manifest, then loads (and\n"
    "unloads) every plugin it names and checks it against its agent type.\n"
    "No agent is started. Prints \"FILE: ok (N agent types, M agents)\" on\n"
    "stdout for each good file and the error on stderr for each bad one;\n"
    "all files are checked even after a bad one. The exit status is that\n"
    "of the first bad file (3 invalid manifest, 4 plugin failed to load).\n"
    "\n"
    AGENTHOST_EXIT_STATUS_HELP,
    command_validate,
  },
  {
    "inspect", "PLUGIN.so...",
    "Describe plugin files, starting no agent",
    "Loads each plugin file and prints its descriptor, without starting\n"
    "an agent (nothing of the plugin runs but its entry function).\n"
    "Before loading it, reads the file as ELF and warns on stderr\n"
    "(\"warning: PATH: ...\") about what would break unloading, reloading\n"
    "or isolation: constructors, destructors, thread-local storage, unique\n"
    "symbols, exports beyond the entry point. Warnings do not change the\n"
    "exit status. Errors go to stderr; the exit status is 4 if any file\n"
    "failed to load.\n"
    "\n"
    AGENTHOST_EXIT_STATUS_HELP,
    command_inspect,
  },
  {
    "new-plugin", "NAME [DIR]",
    "Write a new plugin project, ready to build, test and run",
    "Writes a standalone plugin project into DIR (default: ./NAME), which\n"
    "must not exist or be empty:\n"
    "  NAME.c               an agent type: state, config schema, hooks\n"
    "  meson.build          builds NAME.so and the test; finds agenthost\n"
    "                       with pkg-config\n"
    "  tests/test-NAME.c    unit tests with the agenthost test harness\n"
    "  manifest.yaml        a system that runs it (paths relative to it)\n"
    "  README.md\n"
    "Then: cd DIR && meson setup build && meson test -C build, and\n"
    "agenthost run DIR/manifest.yaml from anywhere.\n"
    "\n"
    "NAME is the agent type's name and a C identifier: a lowercase letter,\n"
    "then lowercase letters, digits or '_', at most 64 bytes.\n"
    "\n"
    AGENTHOST_EXIT_STATUS_HELP,
    command_new_plugin,
  },
  {
    "bench", "[SCENARIO...]",
    "Measure the bus: throughput, fan-out, fan-in, round trips, spawn, stage3",
    "Runs the named scenarios (default: all) in this process, each as a\n"
    "generated system of bench plugin agents, and prints a table, or with\n"
    "--json one JSON array with an object per scenario. Scenarios:\n"
    "  throughput  1 publisher -> a pool of 100 agents (queue delivery)\n"
    "  fanout      1 publisher -> 100 broadcast subscribers of one subject\n"
    "  fanin       100 publishers -> 1 agent\n"
    "  rtt         request/reply: same worker, across workers, under load,\n"
    "              from idle\n"
    "  spawn       spawn/terminate cold and warm, pre-warm of 4 x 1000 and\n"
    "              4 x 100000 agents, batch spawns of 10000 and 100000,\n"
    "              spawn in waves, restarting a failed agent, and holding\n"
    "              1000000 idle agents (bytes per idle agent)\n"
    "  stage3      the replaced manager's seven validation scenarios, each\n"
    "              paced (in waves) and as a burst (all at once)\n"
    "Sequence numbers are checked everywhere; 'lost' counts messages\n"
    "missing, duplicated or reordered, and the exit status is 1 if any.\n"
    "docs/bench.md explains each scenario and how to read it.\n"
    "\n"
    AGENTHOST_EXIT_STATUS_HELP,
    command_bench,
  },
  {
    "help", "[COMMAND]",
    "Show the commands, or one command's help",
    "Without COMMAND, the same as 'agenthost --help'. With COMMAND, the\n"
    "same as 'agenthost COMMAND --help'.",
    command_help,
  },
};

/* ---- Errors and exit statuses ---------------------------------------- */

static int
exit_status_for_error (const GError *error)
{
  if (error->domain == AH_PLUGIN_ERROR)
    return AGENTHOST_EXIT_PLUGIN;
  if (g_error_matches (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_PLUGIN)
      || g_error_matches (error, AH_HOST_ERROR, AH_HOST_ERROR_PLUGIN))
    return AGENTHOST_EXIT_PLUGIN;
  if (error->domain == AH_MANIFEST_ERROR)
    return AGENTHOST_EXIT_INVALID_MANIFEST;
  return AGENTHOST_EXIT_RUN_FAILED;
}

/* Manifest and plugin errors already read "FILE:LINE:COL: error: ..." or
 * "PATH: reason", the form editors and compilers use, so they are printed
 * as they are (the host's plugin error is the manifest's, passed on);
 * anything else gets the program's name, as usual for a command-line
 * tool. Returns the exit status the error stands for. */
static int
report_error (const GError *error)
{
  if (error->domain == AH_MANIFEST_ERROR || error->domain == AH_PLUGIN_ERROR
      || g_error_matches (error, AH_HOST_ERROR, AH_HOST_ERROR_PLUGIN))
    g_printerr ("%s\n", error->message);
  else
    g_printerr ("%s: %s\n", g_get_prgname (), error->message);
  return exit_status_for_error (error);
}

/* ---- Option parsing shared by the commands ---------------------------- */

static char *
command_get_help (const Command *command, GOptionContext *context)
{
  g_autofree char *program = g_strdup (g_get_prgname ());
  g_autofree char *usage_name = g_strdup_printf ("%s %s", program, command->name);
  char *help;

  /* GOption writes the usage line as "PRGNAME [OPTION...] PARAMETERS";
   * the command's name belongs between the program and the options. */
  g_set_prgname (usage_name);
  help = g_option_context_get_help (context, TRUE, NULL);
  g_set_prgname (program);
  return help;
}

static void
print_usage_error (const char *command_name, const char *message)
{
  g_autofree char *program = command_name != NULL
    ? g_strdup_printf ("%s %s", g_get_prgname (), command_name)
    : g_strdup (g_get_prgname ());

  g_printerr ("%s: %s\n", program, message);
  g_printerr ("Try '%s --help' for more information.\n", program);
}

/* Parses the options of @command out of @args. Returns TRUE when the
 * command should go on; FALSE when it is done, with @ret_status set: its
 * help was shown (0) or the options were wrong (2). On TRUE, @args keeps
 * the command's name first and the positional arguments after it. */
static gboolean
command_parse_options (const Command *command, const GOptionEntry *entries,
                       GStrv *args, int *ret_status)
{
  g_autoptr(GOptionContext) context = g_option_context_new (command->parameter_string);
  g_autoptr(GError) error = NULL;
  gboolean show_help = FALSE;
  const GOptionEntry help_entries[] = {
    { "help", 'h', 0, G_OPTION_ARG_NONE, &show_help, "Show this help", NULL },
    G_OPTION_ENTRY_NULL
  };

  g_option_context_set_summary (context, command->summary);
  g_option_context_set_description (context, command->description);
  /* Our own --help entry: GOption's would print and exit() from inside
   * the parser, and "agenthost help CMD" needs the same text. */
  g_option_context_set_help_enabled (context, FALSE);
  if (entries != NULL)
    g_option_context_add_main_entries (context, entries, NULL);
  g_option_context_add_main_entries (context, help_entries, NULL);

  if (!g_option_context_parse_strv (context, args, &error))
    {
      print_usage_error (command->name, error->message);
      *ret_status = AGENTHOST_EXIT_USAGE;
      return FALSE;
    }
  if (show_help)
    {
      g_autofree char *help = command_get_help (command, context);

      g_print ("%s", help);
      *ret_status = AGENTHOST_EXIT_OK;
      return FALSE;
    }
  return TRUE;
}

static const Command *
find_command (const char *name)
{
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    if (g_str_equal (commands[i].name, name))
      return &commands[i];
  return NULL;
}

/* Levenshtein distance, bounded: command names are a few bytes, and a
 * typo worth a suggestion is at most two edits away. */
static guint
edit_distance (const char *a, const char *b)
{
  gsize len_a = strlen (a), len_b = strlen (b);
  g_autofree guint *row = NULL;

  if (len_a > 32 || len_b > 32)
    return G_MAXUINT;
  row = g_new (guint, len_b + 1);
  for (gsize j = 0; j <= len_b; j++)
    row[j] = j;
  for (gsize i = 1; i <= len_a; i++)
    {
      guint diagonal = row[0];

      row[0] = i;
      for (gsize j = 1; j <= len_b; j++)
        {
          guint above = row[j];
          guint best = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);

          best = MIN (best, above + 1);
          best = MIN (best, row[j - 1] + 1);
          row[j] = best;
          diagonal = above;
        }
    }
  return row[len_b];
}

static int
report_unknown_command (const char *name)
{
  const Command *closest = NULL;
  guint closest_distance = 3;

  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    {
      guint distance = edit_distance (name, commands[i].name);

      if (distance < closest_distance)
        {
          closest = &commands[i];
          closest_distance = distance;
        }
    }

  g_printerr ("%s: unknown command '%s'\n", g_get_prgname (), name);
  if (closest != NULL)
    g_printerr ("Did you mean '%s'?\n", closest->name);
  g_printerr ("Try '%s --help' for the list of commands.\n", g_get_prgname ());
  return AGENTHOST_EXIT_USAGE;
}

static void
print_main_help (void)
{
  g_autoptr(GString) help = g_string_new (NULL);
  const char *program = g_get_prgname ();

  g_string_append_printf (help,
                          "Usage:\n"
                          "  %s COMMAND [OPTION...] [ARGUMENT...]\n"
                          "  %s --version\n"
                          "\n"
                          "Hosts a system of agents declared in a YAML manifest: agent types are\n"
                          "plugins (shared objects), agents exchange messages on an in-process bus.\n"
                          "\n"
                          "Commands:\n",
                          program, program);
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    {
      g_autofree char *usage = g_strdup_printf ("%s %s", commands[i].name,
                                                commands[i].parameter_string);

      g_string_append_printf (help, "  %-23s %s\n", usage, commands[i].summary);
    }
  g_string_append_printf (help,
                          "\n"
                          "Options:\n"
                          "  -h, --help              Show this help\n"
                          "  --version               Show the version and the plugin ABI\n"
                          "\n"
                          "%s\n"
                          "\n"
                          "Run '%s help COMMAND' or '%s COMMAND --help' for a command's options.\n",
                          AGENTHOST_EXIT_STATUS_HELP, program, program);
  g_print ("%s", help->str);
}

/* ---- help ------------------------------------------------------------- */

static int
command_help (const Command *command, GStrv *args)
{
  const Command *target;
  g_auto(GStrv) target_args = NULL;
  int status;

  if (!command_parse_options (command, NULL, args, &status))
    return status;

  if (g_strv_length (*args) == 1)
    {
      print_main_help ();
      return AGENTHOST_EXIT_OK;
    }
  if (g_strv_length (*args) > 2)
    {
      print_usage_error (command->name, "expected at most one COMMAND");
      return AGENTHOST_EXIT_USAGE;
    }

  target = find_command ((*args)[1]);
  if (target == NULL)
    return report_unknown_command ((*args)[1]);

  /* "help CMD" is "CMD --help": one text, one code path. */
  target_args = g_new0 (char *, 3);
  target_args[0] = g_strdup (target->name);
  target_args[1] = g_strdup ("--help");
  return target->func (target, &target_args);
}

/* ---- pid files: how `reload` finds a running host -------------------- */

/* A manifest name: what a pid file is named after. The manifest's own
 * rule, so that any running system can be named, and no name can reach
 * outside the directory. */
#define AGENTHOST_NAME_MAX 64

static gboolean
system_name_is_valid (const char *name)
{
  gsize len = strlen (name);

  if (len == 0 || len > AGENTHOST_NAME_MAX)
    return FALSE;
  for (const char *p = name; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && *p != '_' && *p != '.' && *p != '-')
      return FALSE;
  return TRUE;
}

static char *
pid_dir_path (void)
{
  return g_build_filename (g_get_user_runtime_dir (), "agenthost", NULL);
}

static char *
pid_file_path (const char *name)
{
  g_autofree char *dir = pid_dir_path ();
  g_autofree char *file_name = g_strconcat (name, ".pid", NULL);

  return g_build_filename (dir, file_name, NULL);
}

/* The start time of process @pid (field 22 of /proc/PID/stat, in clock
 * ticks after boot). A pid file records it beside the pid: a pid is
 * reused once its process is gone, the pair never is. */
static gboolean
process_start_time (pid_t pid, guint64 *ret_start_time)
{
  g_autofree char *stat_path = g_strdup_printf ("/proc/%d/stat", (int) pid);
  g_autofree char *contents = NULL;
  g_auto(GStrv) fields = NULL;
  const char *after_comm;
  char *end = NULL;

  if (!g_file_get_contents (stat_path, &contents, NULL, NULL))
    return FALSE;
  /* The command name (field 2) is in parentheses and may hold spaces and
   * parentheses itself: the fields that follow start after the last ')'. */
  after_comm = strrchr (contents, ')');
  if (after_comm == NULL)
    return FALSE;
  fields = g_strsplit (after_comm + 1, " ", -1);
  /* fields[0] is empty (the space after ')'), fields[1] is field 3. */
  if (g_strv_length (fields) < 21)
    return FALSE;
  *ret_start_time = g_ascii_strtoull (fields[20], &end, 10);
  return end != fields[20] && *end == '\0';
}

/* Reads "PID START\n". FALSE when the file is missing or not of ours. */
static gboolean
pid_file_read (const char *path, pid_t *ret_pid, guint64 *ret_start_time, GError **error)
{
  g_autofree char *contents = NULL;
  guint64 pid = 0;
  guint64 start_time = 0;
  char *end = NULL;

  if (!g_file_get_contents (path, &contents, NULL, error))
    return FALSE;
  pid = g_ascii_strtoull (contents, &end, 10);
  if (end != contents && *end == ' ')
    {
      const char *start_text = end + 1;

      start_time = g_ascii_strtoull (start_text, &end, 10);
      if (end != start_text && *end == '\n' && end[1] == '\0' && pid > 0 && pid <= G_MAXINT)
        {
          *ret_pid = (pid_t) pid;
          *ret_start_time = start_time;
          return TRUE;
        }
    }
  g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
               "%s is not an agenthost pid file", path);
  return FALSE;
}

/* Whether the pid file at @path names a process that is running now:
 * the same pid, started at the same time. */
static gboolean
pid_file_is_live (const char *path, pid_t *ret_pid)
{
  guint64 start_time = 0;
  guint64 actual_start_time = 0;

  if (!pid_file_read (path, ret_pid, &start_time, NULL))
    return FALSE;
  return process_start_time (*ret_pid, &actual_start_time) && actual_start_time == start_time;
}

/* Writes this process's pid file for the system @name. Returns its path,
 * or NULL when it cannot or must not be written: a live host of the same
 * name keeps its file (`reload NAME` reaches that one, which is worth a
 * warning); an unusable runtime directory (a sandbox may point
 * XDG_RUNTIME_DIR at /dev/null) only costs `reload` its way to find this
 * host, which SIGHUP does not need: -v says so. */
static char *
pid_file_write (const char *name)
{
  g_autofree char *dir = pid_dir_path ();
  g_autofree char *path = pid_file_path (name);
  g_autofree char *contents = NULL;
  g_autoptr(GError) error = NULL;
  guint64 start_time = 0;
  pid_t other = 0;

  if (!system_name_is_valid (name))
    return NULL;
  if (pid_file_is_live (path, &other) && other != getpid ())
    {
      g_printerr ("%s: another host named '%s' is running (pid %d): 'agenthost reload %s' "
                  "reaches that one, not this one\n", g_get_prgname (), name, (int) other, name);
      return NULL;
    }
  if (!process_start_time (getpid (), &start_time))
    {
      g_debug ("cannot read this process's start time: no pid file, 'agenthost reload' "
               "will not find this host");
      return NULL;
    }
  contents = g_strdup_printf ("%d %" G_GUINT64_FORMAT "\n", (int) getpid (), start_time);
  if (g_mkdir_with_parents (dir, 0700) != 0)
    {
      int saved_errno = errno;

      g_debug ("cannot create %s: %s; 'agenthost reload' will not find this host",
               dir, g_strerror (saved_errno));
      return NULL;
    }
  if (!g_file_set_contents (path, contents, -1, &error))
    {
      g_debug ("%s; 'agenthost reload' will not find this host", error->message);
      return NULL;
    }
  return g_steal_pointer (&path);
}

/* Removes the pid file at @path if it still names this process. */
static void
pid_file_remove (const char *path)
{
  guint64 start_time = 0;
  pid_t pid = 0;

  if (pid_file_read (path, &pid, &start_time, NULL) && pid == getpid ())
    g_unlink (path);
}

/* ---- run -------------------------------------------------------------- */

typedef enum {
  RUN_PHASE_STARTING,    /* ah_host_start() is pre-warming */
  RUN_PHASE_RUNNING,     /* ah_host_run() blocks the run thread */
  RUN_PHASE_FINISHED,
} RunPhase;

/* Shared by the main thread (signals, --timeout, the GMainLoop) and the
 * run thread (ah_host_start() then the blocking ah_host_run()). */
typedef struct {
  AhHost     *host;               /* (owned by command_run) */
  const char *system_name;
  GMainLoop  *loop;
  gdouble     timeout_s;          /* 0: no --timeout */
  guint       timeout_source_id;  /* main thread only */
  gboolean    signalled;          /* main thread only: a SIGINT or SIGTERM came */
  gboolean    watch;              /* --watch, or the manifest's watch: true */
  guint       watch_debounce_ms;  /* the manifest's watch_debounce_ms */
  GThread    *reload_thread;      /* main thread only: the latest SIGHUP's */

  GMutex      lock;
  RunPhase    phase;              /* under @lock */
  gboolean    stop_requested;     /* under @lock: by a signal or --timeout */
  gboolean    reload_running;     /* under @lock: a SIGHUP's reload is under way */
  gboolean    reload_again;       /* under @lock: another SIGHUP came meanwhile */

  /* Written by the run thread before it finishes; read after the join. */
  GError     *start_error;
  int         run_status;
  char       *pid_path;           /* NULL when no pid file was written */
} RunState;

/* Asks the host to stop, once. A stop asked for during pre-warm is
 * remembered and applied by the run thread as soon as the start is over,
 * because the host only has a run to stop from then on. Returns FALSE
 * when a stop had already been asked for (by a signal or --timeout). */
static gboolean
run_state_request_stop (RunState *run)
{
  gboolean first;

  g_mutex_lock (&run->lock);
  first = !run->stop_requested;
  run->stop_requested = TRUE;
  /* Under the lock, so the run thread cannot be between reading
   * stop_requested and entering the running phase. */
  if (first && run->phase == RUN_PHASE_RUNNING)
    ah_host_request_stop (run->host, AGENTHOST_EXIT_OK);
  g_mutex_unlock (&run->lock);
  return first;
}

static gboolean
run_on_signal (gpointer user_data, int signum)
{
  RunState *run = user_data;
  const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";

  /* Only a signal counts as the first of two: a stop that --timeout or
   * an agent started must not turn one Ctrl-C into a forced exit. */
  if (!run->signalled)
    {
      run->signalled = TRUE;
      run_state_request_stop (run);
      g_printerr ("%s: %s received, stopping cleanly%s\n",
                  g_get_prgname (), name,
                  signum == SIGINT ? " (Ctrl-C again to exit at once)" : "");
      return G_SOURCE_CONTINUE;
    }

  if (signum == SIGINT)
    {
      /* The run thread is still inside the host: exit() would run
       * destructors under its feet, so leave without them. */
      g_printerr ("%s: second SIGINT, exiting at once\n", g_get_prgname ());
      _exit (AGENTHOST_EXIT_FORCED);
    }
  /* A repeated SIGTERM changes nothing: the drain is already bounded by
   * the manifest's drain_timeout_ms. */
  return G_SOURCE_CONTINUE;
}

/* On a thread of its own: a reload blocks until every agent has
 * switched, and the main loop must keep answering signals meanwhile.
 * SIGHUPs that come during a reload make one more reload after it: a
 * file changed after the first one looked is not missed. */
static gpointer
run_reload_thread_main (gpointer user_data)
{
  RunState *run = user_data;
  gboolean again;

  do
    {
      g_autoptr(GError) error = NULL;
      guint n_reloaded = ah_host_reload_changed (run->host, &error);

      if (n_reloaded > 0)
        g_printerr ("%s: reload: %u plugin file%s reloaded\n", g_get_prgname (),
                    n_reloaded, n_reloaded == 1 ? "" : "s");
      if (error != NULL)
        g_printerr ("%s: reload failed, the running version stays: %s\n",
                    g_get_prgname (), error->message);
      else if (n_reloaded == 0)
        g_printerr ("%s: reload: no plugin changed\n", g_get_prgname ());

      g_mutex_lock (&run->lock);
      again = run->reload_again;
      run->reload_again = FALSE;
      run->reload_running = again;
      g_mutex_unlock (&run->lock);
    }
  while (again);
  return NULL;
}

static gboolean
run_on_sighup (gpointer user_data)
{
  RunState *run = user_data;
  gboolean running;
  gboolean busy;

  g_mutex_lock (&run->lock);
  running = run->phase == RUN_PHASE_RUNNING && !run->stop_requested;
  busy = run->reload_running;
  if (running && busy)
    run->reload_again = TRUE;
  else if (running)
    run->reload_running = TRUE;
  g_mutex_unlock (&run->lock);

  if (!running)
    {
      g_printerr ("%s: SIGHUP received, but the system is not running: nothing to reload\n",
                  g_get_prgname ());
      return G_SOURCE_CONTINUE;
    }
  if (busy)
    {
      g_printerr ("%s: SIGHUP received during a reload: reloading again after it\n",
                  g_get_prgname ());
      return G_SOURCE_CONTINUE;
    }

  g_printerr ("%s: SIGHUP received, reloading the plugins whose files changed\n",
              g_get_prgname ());
  /* The previous reload thread has finished (reload_running was FALSE):
   * this join does not wait. */
  if (run->reload_thread != NULL)
    g_thread_join (run->reload_thread);
  run->reload_thread = g_thread_new ("agenthost-reload", run_reload_thread_main, run);
  return G_SOURCE_CONTINUE;
}

static gboolean
run_on_sigint (gpointer user_data)
{
  return run_on_signal (user_data, SIGINT);
}

static gboolean
run_on_sigterm (gpointer user_data)
{
  return run_on_signal (user_data, SIGTERM);
}

static gboolean
run_on_timeout (gpointer user_data)
{
  RunState *run = user_data;

  run->timeout_source_id = 0;
  if (run_state_request_stop (run))
    g_printerr ("%s: --timeout of %g s reached, stopping\n", g_get_prgname (), run->timeout_s);
  return G_SOURCE_REMOVE;
}

/* On the main thread, once pre-warm is over: --timeout limits the run
 * itself, not the time it takes to get it going. */
static gboolean
run_on_started (gpointer user_data)
{
  RunState *run = user_data;

  if (run->timeout_s > 0)
    {
      guint interval_ms = (guint) MAX (1.0, ceil (run->timeout_s * 1000.0));

      run->timeout_source_id = g_timeout_add (interval_ms, run_on_timeout, run);
    }
  return G_SOURCE_REMOVE;
}

static gboolean
run_on_finished (gpointer user_data)
{
  RunState *run = user_data;

  g_main_loop_quit (run->loop);
  return G_SOURCE_REMOVE;
}

static gpointer
run_thread_main (gpointer user_data)
{
  RunState *run = user_data;
  AhHostStats stats;
  gboolean stop_early;
  gboolean watching = FALSE;

  g_debug ("pre-warming the pools of '%s'", run->system_name);
  if (!ah_host_start (run->host, &run->start_error))
    {
      g_mutex_lock (&run->lock);
      run->phase = RUN_PHASE_FINISHED;
      g_mutex_unlock (&run->lock);
      /* g_idle_add() rather than g_main_loop_quit(): a quit that came
       * before the loop runs would be lost, an idle source is not. */
      g_idle_add (run_on_finished, run);
      return NULL;
    }

  g_mutex_lock (&run->lock);
  run->phase = RUN_PHASE_RUNNING;
  stop_early = run->stop_requested;
  g_mutex_unlock (&run->lock);
  if (stop_early)
    ah_host_request_stop (run->host, AGENTHOST_EXIT_OK);

  if (run->watch && !stop_early)
    {
      g_autoptr(GError) watch_error = NULL;

      watching = ah_host_watch (run->host, run->watch_debounce_ms, &watch_error);
      /* Watching is a convenience: without it, SIGHUP still reloads. */
      if (!watching)
        g_printerr ("%s: cannot watch the plugin files (SIGHUP still reloads): %s\n",
                    g_get_prgname (), watch_error->message);
    }
  /* Before the line below: a script that waits for it can then find the
   * host with `agenthost reload`. */
  run->pid_path = pid_file_write (run->system_name);

  ah_host_get_stats (run->host, &stats);
  g_printerr ("%s: running '%s': %u agent type%s, %u agent%s, pre-warmed in %.1f ms (Ctrl-C to stop)\n",
              g_get_prgname (), run->system_name,
              stats.n_types, stats.n_types == 1 ? "" : "s",
              stats.n_agents, stats.n_agents == 1 ? "" : "s",
              stats.prewarm_ms);
  if (watching)
    g_printerr ("%s: watching the plugin files: one that changes is reloaded after %u ms "
                "without a write\n", g_get_prgname (), run->watch_debounce_ms);
  g_idle_add (run_on_started, run);

  run->run_status = ah_host_run (run->host);
  g_debug ("the run of '%s' ended with status %d", run->system_name, run->run_status);

  g_mutex_lock (&run->lock);
  run->phase = RUN_PHASE_FINISHED;
  g_mutex_unlock (&run->lock);
  g_idle_add (run_on_finished, run);
  return NULL;
}

static void
print_agent_output_to_stderr (const char *text)
{
  fputs (text, stderr);
}

/* Lets -v show the library's debug messages: GLib's default log writer
 * prints those of the domains listed in G_MESSAGES_DEBUG. Called before
 * any thread exists, as setenv() requires. */
static void
enable_debug_messages (void)
{
  const char *current = g_getenv ("G_MESSAGES_DEBUG");
  g_autofree char *domains = NULL;

  if (current != NULL && *current != '\0')
    domains = g_strconcat (current, " ", G_LOG_DOMAIN, NULL);
  else
    domains = g_strdup (G_LOG_DOMAIN);
  g_setenv ("G_MESSAGES_DEBUG", domains, TRUE);
}

static gboolean
parse_timeout (const char *text, gdouble *ret_seconds, GError **error)
{
  char *end = NULL;
  gdouble seconds;

  seconds = g_ascii_strtod (text, &end);
  if (end == text || *end != '\0' || !isfinite (seconds)
      || seconds <= 0 || seconds > AGENTHOST_TIMEOUT_MAX_S)
    {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "--timeout: '%s' is not a number of seconds greater than 0 and at most %.0f",
                   text, floor (AGENTHOST_TIMEOUT_MAX_S));
      return FALSE;
    }
  *ret_seconds = seconds;
  return TRUE;
}

/* A --json FILE that cannot be written should fail before a run that
 * may take hours, not after it. The file itself is written atomically at
 * the end (a temporary file in the same directory, then a rename), so
 * what must be writable is the directory. */
static gboolean
check_json_path (const char *path, GError **error)
{
  g_autofree char *dir = NULL;

  if (*path == '\0')
    {
      g_set_error_literal (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                           "--json: the file name is empty (use '-' for stdout)");
      return FALSE;
    }
  if (g_str_equal (path, "-"))
    return TRUE;
  if (g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "--json: '%s' is a directory", path);
      return FALSE;
    }
  dir = g_path_get_dirname (path);
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR) || g_access (dir, W_OK) != 0)
    {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "--json: cannot write into directory '%s'%s", dir,
                   g_file_test (dir, G_FILE_TEST_IS_DIR) ? " (permission denied)" : " (no such directory)");
      return FALSE;
    }
  return TRUE;
}

/* Writes the JSON summary to @path ("-" is stdout). */
static gboolean
write_json_summary (AhHost *host, const char *path, GError **error)
{
  g_autofree char *json = ah_host_format_summary_json (host);
  g_autofree char *document = g_str_has_suffix (json, "\n")
    ? g_strdup (json) : g_strconcat (json, "\n", NULL);

  if (g_str_equal (path, "-"))
    {
      /* Bytes as they are: g_print() would convert them to the locale's
       * charset, and the document is UTF-8 by definition. */
      if (fputs (document, stdout) == EOF || fflush (stdout) != 0)
        {
          g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_IO,
                       "cannot write the JSON summary to stdout: %s", g_strerror (errno));
          return FALSE;
        }
      return TRUE;
    }
  return g_file_set_contents (path, document, -1, error);
}

/* What supervision did, per agent type that saw any of it: the numbers
 * of AhTypeStats the summary's table has no column for (the JSON summary
 * has them all). Empty when no type failed, overran or scaled. */
static char *
format_supervision (AhHost *host)
{
  GString *out = g_string_new (NULL);

  for (guint i = 0; i < ah_host_get_n_types (host); i++)
    {
      AhTypeStats stats;

      if (!ah_host_get_type_stats (host, i, &stats)
          || (stats.failed == 0 && stats.restarted == 0 && stats.retried == 0
              && stats.failed_messages == 0 && stats.deadline_overruns == 0
              && stats.scaled_up == 0 && stats.scaled_down == 0 && !stats.stopped))
        continue;
      g_string_append_printf (out, "  supervision %s: %" G_GUINT64_FORMAT " failure%s, %"
                              G_GUINT64_FORMAT " restart%s (p50 %.1f us), %" G_GUINT64_FORMAT
                              " message%s retried, %" G_GUINT64_FORMAT " dead-lettered after a "
                              "failure, %" G_GUINT64_FORMAT " watchdog report%s",
                              stats.name, stats.failed, stats.failed == 1 ? "" : "s",
                              stats.restarted, stats.restarted == 1 ? "" : "s", stats.restart_p50_us,
                              stats.retried, stats.retried == 1 ? "" : "s", stats.failed_messages,
                              stats.deadline_overruns, stats.deadline_overruns == 1 ? "" : "s");
      if (stats.scaled_up > 0 || stats.scaled_down > 0)
        g_string_append_printf (out, ", autoscaled +%" G_GUINT64_FORMAT " -%" G_GUINT64_FORMAT,
                                stats.scaled_up, stats.scaled_down);
      if (stats.stopped)
        g_string_append (out, "; stopped: restart budget exhausted");
      g_string_append_c (out, '\n');
    }
  return g_string_free (out, FALSE);
}

static int
command_run (const Command *command, GStrv *args)
{
  g_autofree char *json_path = NULL;
  g_autofree char *timeout_text = NULL;
  gboolean verbose = FALSE;
  gboolean quiet = FALSE;
  gboolean watch = FALSE;
  const GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_FILENAME, &json_path,
      "Write the summary as JSON to FILE ('-': stdout, no text summary)", "FILE" },
    { "timeout", 0, 0, G_OPTION_ARG_STRING, &timeout_text,
      "Stop the run SECONDS after pre-warm", "SECONDS" },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose,
      "Show debug messages (agenthost log domain) on stderr", NULL },
    { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet,
      "Do not print the text summary", NULL },
    { "watch", 'w', 0, G_OPTION_ARG_NONE, &watch,
      "Reload a plugin when its file changes (as the manifest's watch: true)", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhHost) host = NULL;
  g_autofree char *system_name = NULL;
  g_autoptr(GMainLoop) loop = NULL;
  RunState run = { 0 };
  GThread *thread;
  guint sigint_id, sigterm_id, sighup_id;
  gboolean json_to_stdout;
  int status;

  if (!command_parse_options (command, entries, args, &status))
    return status;
  if (g_strv_length (*args) > 2)
    {
      print_usage_error (command->name, "expected at most one MANIFEST");
      return AGENTHOST_EXIT_USAGE;
    }
  if (timeout_text != NULL && !parse_timeout (timeout_text, &run.timeout_s, &error))
    {
      print_usage_error (command->name, error->message);
      return AGENTHOST_EXIT_USAGE;
    }
  if (json_path != NULL && !check_json_path (json_path, &error))
    {
      print_usage_error (command->name, error->message);
      return AGENTHOST_EXIT_USAGE;
    }
  if (verbose)
    enable_debug_messages ();
  json_to_stdout = json_path != NULL && g_str_equal (json_path, "-");
  if (json_to_stdout)
    {
      /* Agents report with g_print() (the default system's reporter
       * does): sent to stderr, they cannot corrupt the JSON document.
       * Plugins share this process's GLib, so this reaches them. */
      g_set_print_handler (print_agent_output_to_stderr);
    }

  if ((*args)[1] != NULL)
    manifest = ah_manifest_load ((*args)[1], &error);
  else
    manifest = ah_manifest_load_default (&error);
  if (manifest == NULL)
    return report_error (error);
  g_debug ("loaded manifest %s", ah_manifest_get_path (manifest));

  system_name = g_strdup (ah_manifest_get_name (manifest));
  run.watch = ah_manifest_get_watch (manifest, &run.watch_debounce_ms) || watch;
  host = ah_host_new (g_steal_pointer (&manifest), &error);
  if (host == NULL)
    return report_error (error);

  loop = g_main_loop_new (NULL, FALSE);
  run.host = host;
  run.system_name = system_name;
  run.loop = loop;
  run.phase = RUN_PHASE_STARTING;
  g_mutex_init (&run.lock);

  /* Installed before the run thread exists, so that no thread ever sees
   * these signals with their default action (terminate). */
  sigint_id = g_unix_signal_add (SIGINT, run_on_sigint, &run);
  sigterm_id = g_unix_signal_add (SIGTERM, run_on_sigterm, &run);
  sighup_id = g_unix_signal_add (SIGHUP, run_on_sighup, &run);

  thread = g_thread_new ("agenthost-run", run_thread_main, &run);
  g_main_loop_run (loop);
  g_thread_join (thread);
  /* A reload still under way ends with an error once the host has
   * stopped; the host must outlive it. */
  if (run.reload_thread != NULL)
    g_thread_join (run.reload_thread);
  if (run.pid_path != NULL)
    {
      pid_file_remove (run.pid_path);
      g_clear_pointer (&run.pid_path, g_free);
    }

  g_source_remove (sigint_id);
  g_source_remove (sigterm_id);
  /* The SIGHUP source stays until the end: without it, a late
   * `agenthost reload` would kill the process (SIGHUP's default action)
   * before its summary. No loop runs now, so it never dispatches. */
  if (run.timeout_source_id != 0)
    g_source_remove (run.timeout_source_id);
  g_mutex_clear (&run.lock);

  if (run.start_error != NULL)
    {
      status = report_error (run.start_error);
      g_clear_error (&run.start_error);
      g_source_remove (sighup_id);
      return status;
    }

  /* The run's own status: 0, or the code an agent stopped it with. A
   * code the shell cannot carry (exit statuses are 8 bits) is a failure. */
  status = run.run_status;
  if (status < 0 || status > 255)
    status = AGENTHOST_EXIT_RUN_FAILED;

  if (!quiet && !json_to_stdout)
    {
      g_autofree char *summary = ah_host_format_summary (host);
      g_autofree char *supervision = format_supervision (host);

      g_print ("%s%s%s", summary, g_str_has_suffix (summary, "\n") ? "" : "\n", supervision);
    }
  if (json_path != NULL && !write_json_summary (host, json_path, &error))
    {
      g_printerr ("%s: cannot write the JSON summary: %s\n", g_get_prgname (), error->message);
      if (status == AGENTHOST_EXIT_OK)
        status = AGENTHOST_EXIT_RUN_FAILED;
    }
  g_source_remove (sighup_id);
  return status;
}

/* ---- validate --------------------------------------------------------- */

static int
validate_one (const char *path)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = ah_manifest_load (path, &error);
  guint n_types;
  guint64 n_agents;

  if (manifest == NULL)
    return report_error (error);
  if (!ah_manifest_check_plugins (manifest, &error))
    return report_error (error);
  n_types = ah_manifest_get_n_types (manifest);
  n_agents = ah_manifest_get_n_agents (manifest);

  g_print ("%s: ok (%u agent type%s, %" G_GUINT64_FORMAT " agent%s)\n", path,
           n_types, n_types == 1 ? "" : "s", n_agents, n_agents == 1 ? "" : "s");
  return AGENTHOST_EXIT_OK;
}

static int
command_validate (const Command *command, GStrv *args)
{
  int status = AGENTHOST_EXIT_OK;

  if (!command_parse_options (command, NULL, args, &status))
    return status;
  if ((*args)[1] == NULL)
    {
      print_usage_error (command->name, "expected at least one FILE");
      return AGENTHOST_EXIT_USAGE;
    }

  for (guint i = 1; (*args)[i] != NULL; i++)
    {
      int file_status = validate_one ((*args)[i]);

      if (status == AGENTHOST_EXIT_OK)
        status = file_status;
    }
  return status;
}

/* ---- inspect ---------------------------------------------------------- */

static int
command_inspect (const Command *command, GStrv *args)
{
  int status = AGENTHOST_EXIT_OK;
  gboolean first_output = TRUE;

  if (!command_parse_options (command, NULL, args, &status))
    return status;
  if ((*args)[1] == NULL)
    {
      print_usage_error (command->name, "expected at least one PLUGIN.so");
      return AGENTHOST_EXIT_USAGE;
    }

  for (guint i = 1; (*args)[i] != NULL; i++)
    {
      const char *path = (*args)[i];
      g_autoptr(GError) lint_error = NULL;
      g_auto(GStrv) warnings = NULL;
      g_autoptr(GError) error = NULL;
      g_autoptr(AhPlugin) plugin = NULL;
      g_autofree char *description = NULL;

      /* Read as a file before dlopen() runs any of it: the warnings are
       * about what loading (and unloading) would do. */
      warnings = ah_plugin_lint (path, &lint_error);
      plugin = ah_plugin_open (path, &error);
      if (warnings != NULL)
        {
          for (guint j = 0; warnings[j] != NULL; j++)
            g_printerr ("warning: %s: %s\n", path, warnings[j]);
        }
      else if (plugin != NULL)
        {
          /* A file the loader takes but the ELF reader does not is still
           * described; that it went unchecked is worth a warning. Its
           * message names the file already. */
          g_printerr ("warning: %s\n", lint_error->message);
        }

      if (plugin == NULL)
        {
          int file_status = report_error (error);

          if (status == AGENTHOST_EXIT_OK)
            status = file_status;
          continue;
        }
      description = ah_plugin_describe (plugin);
      g_print ("%s%s%s", first_output ? "" : "\n", description,
               g_str_has_suffix (description, "\n") ? "" : "\n");
      first_output = FALSE;
    }
  return status;
}

/* ---- new-plugin --------------------------------------------------------- */

/* The agent type's name rule (the manifest's) narrowed to what is also a
 * C identifier, since the generated code builds its names from it. */
#define NEW_PLUGIN_NAME_MAX 64
#define NEW_PLUGIN_TEMPLATE_PREFIX "/org/agenthost/templates/"

typedef struct {
  const char *template_name;   /* under NEW_PLUGIN_TEMPLATE_PREFIX */
  const char *path;            /* relative to DIR; placeholders expanded */
  const char *what;            /* for the listing; placeholders expanded */
} ScaffoldFile;

static const ScaffoldFile scaffold_files[] = {
  { "plugin.c.in", "@NAME@.c", "the agent type: state, config schema, hooks" },
  { "meson.build.in", "meson.build", "builds @NAME@.so and its test, agenthost from pkg-config" },
  { "test-plugin.c.in", "tests/test-@NAME@.c", "unit tests with the agenthost test harness" },
  { "manifest.yaml.in", "manifest.yaml", "a system of two @NAME@ agents" },
  { "README.md.in", "README.md", "how to build, test and run it" },
};

/* The placeholders of the templates, all derived from NAME. */
typedef struct {
  const char *name;    /* @NAME@: as given, "my_agent" */
  char       *type;    /* @TYPE@: CamelCase, "MyAgent", for type names */
  char       *upper;   /* @UPPER@: "MY_AGENT", for macros */
  char       *pad;     /* @PAD@: as many spaces as NAME has bytes, to
                        * align continuation lines under a "NAME_..." */
} ScaffoldNames;

static void
scaffold_names_clear (ScaffoldNames *names)
{
  g_clear_pointer (&names->type, g_free);
  g_clear_pointer (&names->upper, g_free);
  g_clear_pointer (&names->pad, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (ScaffoldNames, scaffold_names_clear)

static gboolean
new_plugin_name_is_valid (const char *name)
{
  gsize len = strlen (name);

  if (len == 0 || len > NEW_PLUGIN_NAME_MAX || !g_ascii_islower (name[0]))
    return FALSE;
  for (gsize i = 1; i < len; i++)
    if (!g_ascii_islower (name[i]) && !g_ascii_isdigit (name[i]) && name[i] != '_')
      return FALSE;
  return TRUE;
}

static void
scaffold_names_init (ScaffoldNames *names, const char *name)
{
  GString *type = g_string_new (NULL);
  gboolean word_start = TRUE;

  for (const char *p = name; *p != '\0'; p++)
    {
      if (*p == '_')
        word_start = TRUE;
      else
        {
          g_string_append_c (type, word_start ? g_ascii_toupper (*p) : *p);
          word_start = FALSE;
        }
    }
  names->name = name;
  names->type = g_string_free (type, FALSE);
  names->upper = g_ascii_strup (name, -1);
  names->pad = g_strnfill (strlen (name), ' ');
}

static char *
scaffold_expand (const char *text, gsize size, const ScaffoldNames *names)
{
  const struct {
    const char *token;
    const char *value;
  } placeholders[] = {
    { "@NAME@", names->name },
    { "@TYPE@", names->type },
    { "@UPPER@", names->upper },
    { "@PAD@", names->pad },
  };
  GString *out = g_string_sized_new (size + size / 4);
  gsize i = 0;

  while (i < size)
    {
      gboolean replaced = FALSE;

      if (text[i] == '@')
        {
          for (gsize k = 0; k < G_N_ELEMENTS (placeholders) && !replaced; k++)
            {
              gsize token_len = strlen (placeholders[k].token);

              if (size - i >= token_len && memcmp (text + i, placeholders[k].token, token_len) == 0)
                {
                  g_string_append (out, placeholders[k].value);
                  i += token_len;
                  replaced = TRUE;
                }
            }
        }
      if (!replaced)
        g_string_append_c (out, text[i++]);
    }
  return g_string_free (out, FALSE);
}

/* What was created so far, to take back when a later step fails: a
 * half-written project would be refused by the next attempt (not empty),
 * and nothing in it would be worth keeping. */
typedef struct {
  GPtrArray *files;   /* (element-type filename) */
  GPtrArray *dirs;    /* (element-type filename), parents first */
} ScaffoldUndo;

static void
scaffold_undo_run (ScaffoldUndo *undo)
{
  for (guint i = undo->files->len; i > 0; i--)
    g_unlink (g_ptr_array_index (undo->files, i - 1));
  for (guint i = undo->dirs->len; i > 0; i--)
    g_rmdir (g_ptr_array_index (undo->dirs, i - 1));
}

/* Creates @dir and whichever of its parents are missing, remembering
 * each for the undo. */
static gboolean
scaffold_make_dirs (const char *dir, ScaffoldUndo *undo, GError **error)
{
  g_autoptr(GPtrArray) missing = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *current = g_strdup (dir);

  while (!g_file_test (current, G_FILE_TEST_EXISTS))
    {
      char *parent = g_path_get_dirname (current);

      g_ptr_array_add (missing, g_steal_pointer (&current));
      if (g_str_equal (parent, g_ptr_array_index (missing, missing->len - 1)))
        {
          g_free (parent);
          break;
        }
      current = parent;
    }

  for (guint i = missing->len; i > 0; i--)
    {
      const char *path = g_ptr_array_index (missing, i - 1);

      if (g_mkdir (path, 0777) != 0)
        {
          int saved_errno = errno;

          g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved_errno),
                       "cannot create directory '%s': %s", path, g_strerror (saved_errno));
          return FALSE;
        }
      g_ptr_array_add (undo->dirs, g_strdup (path));
    }
  return TRUE;
}

/* O_EXCL: never replaces a file, even one that appeared in the
 * directory after it was found empty. */
static gboolean
scaffold_write_file (const char *path, const char *contents, ScaffoldUndo *undo, GError **error)
{
  gsize size = strlen (contents);
  gsize written = 0;
  int saved_errno = 0;
  int fd;

  fd = g_open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0)
    {
      saved_errno = errno;
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved_errno),
                   "cannot create '%s': %s", path, g_strerror (saved_errno));
      return FALSE;
    }
  g_ptr_array_add (undo->files, g_strdup (path));

  while (written < size && saved_errno == 0)
    {
      gssize n = write (fd, contents + written, size - written);

      if (n >= 0)
        written += (gsize) n;
      else if (errno != EINTR)
        saved_errno = errno;
    }
  if (close (fd) != 0 && saved_errno == 0)
    saved_errno = errno;
  if (saved_errno != 0)
    {
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved_errno),
                   "cannot write '%s': %s", path, g_strerror (saved_errno));
      return FALSE;
    }
  return TRUE;
}

static gboolean
scaffold_write_all (const char *dir, const ScaffoldNames *names, ScaffoldUndo *undo,
                    GError **error)
{
  g_autofree char *tests_dir = g_build_filename (dir, "tests", NULL);

  if (!scaffold_make_dirs (dir, undo, error) || !scaffold_make_dirs (tests_dir, undo, error))
    return FALSE;

  for (gsize i = 0; i < G_N_ELEMENTS (scaffold_files); i++)
    {
      const ScaffoldFile *file = &scaffold_files[i];
      g_autofree char *resource = g_strconcat (NEW_PLUGIN_TEMPLATE_PREFIX, file->template_name, NULL);
      g_autoptr(GBytes) template = NULL;
      g_autofree char *relative = scaffold_expand (file->path, strlen (file->path), names);
      g_autofree char *path = g_build_filename (dir, relative, NULL);
      g_autofree char *contents = NULL;
      gsize size;
      gconstpointer data;

      /* Built into this program: a lookup failure is a broken build. */
      template = g_resources_lookup_data (resource, G_RESOURCE_LOOKUP_FLAGS_NONE, error);
      if (template == NULL)
        return FALSE;
      data = g_bytes_get_data (template, &size);
      contents = scaffold_expand (data, size, names);
      if (!scaffold_write_file (path, contents, undo, error))
        return FALSE;
    }
  return TRUE;
}

/* A directory the project may go into: one that does not exist yet (it
 * is created, parents too), or an empty one. Anything else is the
 * user's, and is left alone. */
static gboolean
scaffold_check_dir (const char *dir, GError **error)
{
  g_autoptr(GDir) listing = NULL;
  GStatBuf info;

  if (g_stat (dir, &info) != 0)
    {
      int saved_errno = errno;

      if (saved_errno == ENOENT)
        return TRUE;
      g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved_errno),
                   "cannot use '%s': %s", dir, g_strerror (saved_errno));
      return FALSE;
    }
  if (!S_ISDIR (info.st_mode))
    {
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_EXIST,
                   "'%s' exists and is not a directory", dir);
      return FALSE;
    }
  listing = g_dir_open (dir, 0, error);
  if (listing == NULL)
    return FALSE;
  if (g_dir_read_name (listing) != NULL)
    {
      g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_EXIST,
                   "'%s' exists and is not empty; give a new or empty directory", dir);
      return FALSE;
    }
  return TRUE;
}

/* For the "next" lines: DIR as a shell would need it typed. */
static char *
shell_word (const char *text)
{
  for (const char *p = text; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && strchr ("/._-+,:=@%", *p) == NULL)
      return g_shell_quote (text);
  return g_strdup (text);
}

static int
command_new_plugin (const Command *command, GStrv *args)
{
  g_auto(ScaffoldNames) names = { 0 };
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) undo_files = NULL;
  g_autoptr(GPtrArray) undo_dirs = NULL;
  g_autofree char *dir_word = NULL;
  g_auto(GStrv) paths = g_new0 (char *, G_N_ELEMENTS (scaffold_files) + 1);
  gsize path_width = 0;
  ScaffoldUndo undo;
  const char *name;
  const char *dir;
  int status;

  if (!command_parse_options (command, NULL, args, &status))
    return status;
  if ((*args)[1] == NULL)
    {
      print_usage_error (command->name, "expected a NAME");
      return AGENTHOST_EXIT_USAGE;
    }
  if (g_strv_length (*args) > 3)
    {
      print_usage_error (command->name, "expected a NAME and at most one DIR");
      return AGENTHOST_EXIT_USAGE;
    }
  name = (*args)[1];
  dir = (*args)[2] != NULL ? (*args)[2] : name;

  if (!new_plugin_name_is_valid (name))
    {
      g_autofree char *escaped = g_strescape (name, NULL);
      g_autofree char *shown = NULL;
      g_autofree char *message = NULL;

      /* Escaped and cut: whatever was typed, the message stays one line. */
      shown = strlen (escaped) > 80 ? g_strdup_printf ("%.80s...", escaped) : g_strdup (escaped);
      message = g_strdup_printf ("'%s' is not a valid plugin name: a lowercase letter, "
                                 "then lowercase letters, digits or '_', at most %d bytes",
                                 shown, NEW_PLUGIN_NAME_MAX);
      print_usage_error (command->name, message);
      return AGENTHOST_EXIT_USAGE;
    }
  if (*dir == '\0')
    {
      print_usage_error (command->name, "DIR is empty");
      return AGENTHOST_EXIT_USAGE;
    }
  if (!scaffold_check_dir (dir, &error))
    {
      if (g_error_matches (error, G_FILE_ERROR, G_FILE_ERROR_EXIST))
        {
          print_usage_error (command->name, error->message);
          return AGENTHOST_EXIT_USAGE;
        }
      return report_error (error);
    }

  scaffold_names_init (&names, name);
  undo_files = g_ptr_array_new_with_free_func (g_free);
  undo_dirs = g_ptr_array_new_with_free_func (g_free);
  undo.files = undo_files;
  undo.dirs = undo_dirs;
  if (!scaffold_write_all (dir, &names, &undo, &error))
    {
      scaffold_undo_run (&undo);
      return report_error (error);
    }

  g_print ("Created the plugin project '%s' in %s:\n", name, dir);
  for (gsize i = 0; i < G_N_ELEMENTS (scaffold_files); i++)
    {
      g_autofree char *relative = scaffold_expand (scaffold_files[i].path,
                                                   strlen (scaffold_files[i].path), &names);

      paths[i] = g_build_filename (dir, relative, NULL);
      path_width = MAX (path_width, strlen (paths[i]));
    }
  for (gsize i = 0; i < G_N_ELEMENTS (scaffold_files); i++)
    {
      g_autofree char *what = scaffold_expand (scaffold_files[i].what,
                                               strlen (scaffold_files[i].what), &names);

      g_print ("  %-*s  %s\n", (int) path_width, paths[i], what);
    }
  dir_word = shell_word (dir);
  g_print ("\n"
           "Next:\n"
           "  cd %s\n"
           "  meson setup build && meson test -C build\n"
           "  %s run manifest.yaml\n",
           dir_word, g_get_prgname ());
  return AGENTHOST_EXIT_OK;
}

/* ---- reload ----------------------------------------------------------- */

static int
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char * const *) a, *(const char * const *) b);
}

/* The names of the systems whose pid files name a live host, sorted.
 * Stale files (a host that was killed) are skipped, not removed: they
 * are not ours. */
static GPtrArray *
list_running_systems (void)
{
  g_autofree char *dir_path = pid_dir_path ();
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GDir) dir = g_dir_open (dir_path, 0, NULL);
  const char *entry;

  while (dir != NULL && (entry = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *name = NULL;
      g_autofree char *path = NULL;
      pid_t pid = 0;

      if (!g_str_has_suffix (entry, ".pid"))
        continue;
      name = g_strndup (entry, strlen (entry) - strlen (".pid"));
      if (!system_name_is_valid (name))
        continue;
      path = g_build_filename (dir_path, entry, NULL);
      if (pid_file_is_live (path, &pid))
        g_ptr_array_add (names, g_steal_pointer (&name));
    }
  g_ptr_array_sort (names, compare_strings);
  return g_steal_pointer (&names);
}

static int
command_reload (const Command *command, GStrv *args)
{
  g_autofree char *name = NULL;
  g_autofree char *path = NULL;
  g_autoptr(GError) error = NULL;
  guint64 start_time = 0;
  guint64 actual_start_time = 0;
  pid_t pid = 0;
  int status;

  if (!command_parse_options (command, NULL, args, &status))
    return status;
  if (g_strv_length (*args) > 2)
    {
      print_usage_error (command->name, "expected at most one NAME");
      return AGENTHOST_EXIT_USAGE;
    }

  if ((*args)[1] != NULL)
    {
      if (!system_name_is_valid ((*args)[1]))
        {
          g_autofree char *message = g_strdup_printf (
              "'%s' is not a system name: 1 to %d characters of A-Z a-z 0-9 _ . -",
              (*args)[1], AGENTHOST_NAME_MAX);

          print_usage_error (command->name, message);
          return AGENTHOST_EXIT_USAGE;
        }
      name = g_strdup ((*args)[1]);
    }
  else
    {
      g_autoptr(GPtrArray) running = list_running_systems ();

      if (running->len == 0)
        {
          g_autofree char *dir = pid_dir_path ();

          g_printerr ("%s: no system is running (no live pid file in %s)\n",
                      g_get_prgname (), dir);
          return AGENTHOST_EXIT_RUN_FAILED;
        }
      if (running->len > 1)
        {
          g_autofree char *list = NULL;

          g_ptr_array_add (running, NULL);
          list = g_strjoinv (", ", (char **) running->pdata);
          g_printerr ("%s %s: %u systems are running (%s): name one\n", g_get_prgname (),
                      command->name, running->len - 1, list);
          return AGENTHOST_EXIT_USAGE;
        }
      name = g_strdup (g_ptr_array_index (running, 0));
    }

  path = pid_file_path (name);
  if (!pid_file_read (path, &pid, &start_time, &error))
    {
      if (g_error_matches (error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        g_printerr ("%s: no system named '%s' is running (no %s)\n",
                    g_get_prgname (), name, path);
      else
        g_printerr ("%s: %s\n", g_get_prgname (), error->message);
      return AGENTHOST_EXIT_RUN_FAILED;
    }
  /* Never signal a process that merely got the pid of a host that died:
   * SIGHUP would terminate most programs. */
  if (!process_start_time (pid, &actual_start_time) || actual_start_time != start_time)
    {
      g_printerr ("%s: no system named '%s' is running (%s is stale: process %d is gone)\n",
                  g_get_prgname (), name, path, (int) pid);
      return AGENTHOST_EXIT_RUN_FAILED;
    }
  if (kill (pid, SIGHUP) != 0)
    {
      int saved_errno = errno;

      g_printerr ("%s: cannot signal '%s' (pid %d): %s\n", g_get_prgname (), name, (int) pid,
                  g_strerror (saved_errno));
      return AGENTHOST_EXIT_RUN_FAILED;
    }
  g_print ("sent SIGHUP to '%s' (pid %d): it reloads the plugins whose files changed, "
           "and logs what it did\n", name, (int) pid);
  return AGENTHOST_EXIT_OK;
}

/* ---- main ------------------------------------------------------------- */

/* ---- bench: the bus measured through the public API ------------------ */

/* Every scenario is a manifest generated here, running agents of the
 * bench plugin (plugins/bench/), whose reports this reads through the
 * layouts of plugins/bench/bench-wire.h. */

#define BENCH_WAIT_US        (120 * G_USEC_PER_SEC)
#define BENCH_POOL           100
#define BENCH_SPAWN_CYCLE_MAX 10000
#define BENCH_IDLE_PAUSE_US  2000
/* spawn: the waves case spawns --spawn-agents in this many waves, this
 * far apart; the restart case restarts at most this many agents; the
 * hold case keeps this many times --spawn-agents idle agents at once
 * (1,000,000 at the default, 10,000,000 at the maximum). */
#define BENCH_WAVES          10
#define BENCH_WAVE_PAUSE_MS  10
#define BENCH_RESTARTS       1000
#define BENCH_HOLD_FACTOR    10

typedef struct {
  gint     workers;
  gboolean pin;
  gint     batch;
  gint     payload;
  gint64   messages;
  gboolean json;
  gdouble  sustained_seconds;
  gint     spawn_agents;
} BenchOptions;

typedef struct {
  char    *scenario;
  guint64  messages;
  gdouble  seconds;
  gdouble  p50_us;
  gdouble  p95_us;
  gdouble  p99_us;
  gdouble  p999_us;
  guint64  lost;
  guint32  state_size;   /* spawn: the plugin's per-agent state */
  gboolean pair_apart;   /* rtt: the two agents ran on two threads throughout */
  GString *extra_json;   /* more ", \"key\": value" members */
  GString *extra_text;   /* the table's notes column */
} BenchResult;

/* What the agents' reports add up to, filled on bus workers. */
typedef struct {
  GMutex   lock;
  GCond    cond;
  guint    n_reports;
  guint    bad_reports;
  guint    n_done;
  guint64  handled;
  guint64  anomalies;
  guint64  gaps;
  guint64  failures;
  guint64  completed;
  guint64  sent;
  guint64  seq_sum;
  guint64  tasks_ok;
  guint32  state_size;
  /* "every" sinks: what each stream was expected to deliver; each
   * sink's shortfall at the end is lost. */
  gboolean every;
  guint64  stream_expected;
  guint64  tail_missing;
  GArray  *streams;        /* BenchStreamReport, summed over sinks */
  guint64  thread_ids[BENCH_ROLE_IDLE + 1];
  guint64  first_thread_ids[BENCH_ROLE_IDLE + 1];
  guint64  moves[BENCH_ROLE_IDLE + 1];
  guint64  hists[BENCH_N_HISTS][BENCH_HIST_BUCKETS];
} BenchCollector;

static void
bench_result_free (BenchResult *result)
{
  g_free (result->scenario);
  g_string_free (result->extra_json, TRUE);
  g_string_free (result->extra_text, TRUE);
  g_free (result);
}

static BenchResult *
bench_result_new (const char *scenario)
{
  BenchResult *result = g_new0 (BenchResult, 1);

  result->scenario = g_strdup (scenario);
  result->extra_json = g_string_new (NULL);
  result->extra_text = g_string_new (NULL);
  return result;
}

/* How many agents the bus moved between workers during the scenario:
 * what a figure owes to the workers sharing out the agents. */
static void
bench_result_add_steals (BenchResult *result,
                         AhHost      *host)
{
  AhHostStats stats;

  ah_host_get_stats (host, &stats);
  g_string_append_printf (result->extra_json, ", \"steals\": %" G_GUINT64_FORMAT, stats.steals);
}

static void
bench_collector_init (BenchCollector *collector)
{
  memset (collector, 0, sizeof *collector);
  g_mutex_init (&collector->lock);
  g_cond_init (&collector->cond);
  collector->streams = g_array_new (FALSE, TRUE, sizeof (BenchStreamReport));
}

static void
bench_collector_clear (BenchCollector *collector)
{
  g_mutex_clear (&collector->lock);
  g_cond_clear (&collector->cond);
  g_array_unref (collector->streams);
}

static guint64
bench_now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (guint64) ts.tv_sec * G_GUINT64_CONSTANT (1000000000) + (guint64) ts.tv_nsec;
}

/* Runs on a bus worker for every "bench.report". */
static void
bench_collector_on_report (const AhMessage *message,
                           gpointer         user_data)
{
  BenchCollector *collector = user_data;
  gsize hists_size;
  gsize size;
  const guint8 *data = ah_message_get_data (message, &size);
  BenchReport report;

  g_mutex_lock (&collector->lock);
  if (size < sizeof report)
    goto bad;
  memcpy (&report, data, sizeof report);
  if (report.magic != BENCH_REPORT_MAGIC || report.role > BENCH_ROLE_IDLE
      || (report.n_hists != 0 && report.n_hists != BENCH_N_HISTS))
    goto bad;
  hists_size = (gsize) report.n_hists * BENCH_HIST_BUCKETS * sizeof (guint32);
  if (size != sizeof report + hists_size + (gsize) report.n_streams * sizeof (BenchStreamReport))
    goto bad;

  collector->n_reports++;
  collector->handled += report.handled;
  collector->anomalies += report.anomalies;
  collector->gaps += report.gaps;
  collector->failures += report.failures;
  collector->completed += report.completed;
  collector->sent += report.sent;
  collector->seq_sum += report.seq_sum;
  collector->tasks_ok += report.tasks_ok;
  collector->state_size = report.state_size;
  if (report.thread_id != 0)
    {
      collector->thread_ids[report.role] = report.thread_id;
      collector->first_thread_ids[report.role] = report.first_thread_id;
    }
  collector->moves[report.role] += report.moves;
  for (guint h = 0; h < report.n_hists; h++)
    for (guint b = 0; b < BENCH_HIST_BUCKETS; b++)
      {
        guint32 count;

        memcpy (&count, data + sizeof report + (h * BENCH_HIST_BUCKETS + b) * sizeof count,
                sizeof count);
        collector->hists[h][b] += count;
      }
  if (collector->streams->len < report.n_streams)
    g_array_set_size (collector->streams, report.n_streams);
  for (guint i = 0; i < report.n_streams; i++)
    {
      BenchStreamReport stream;
      BenchStreamReport *sum = &g_array_index (collector->streams, BenchStreamReport, i);

      memcpy (&stream, data + sizeof report + hists_size + i * sizeof stream, sizeof stream);
      sum->received += stream.received;
      sum->seq_sum += stream.seq_sum;
      if (collector->every && stream.next < collector->stream_expected)
        collector->tail_missing += collector->stream_expected - stream.next;
    }
  g_mutex_unlock (&collector->lock);
  return;

bad:
  collector->bad_reports++;
  g_mutex_unlock (&collector->lock);
}

static void
bench_collector_on_done (const AhMessage *message,
                         gpointer         user_data)
{
  BenchCollector *collector = user_data;

  g_mutex_lock (&collector->lock);
  collector->n_done++;
  g_cond_broadcast (&collector->cond);
  g_mutex_unlock (&collector->lock);
}

/* Percentile @q (0..1) of histogram @hist, in microseconds. */
static gdouble
bench_hist_percentile_us (const guint64 *hist,
                          gdouble        q)
{
  guint64 total = 0;
  guint64 rank;
  guint64 seen = 0;

  for (guint b = 0; b < BENCH_HIST_BUCKETS; b++)
    total += hist[b];
  if (total == 0)
    return 0.0;
  rank = (guint64) ceil (q * (gdouble) total);
  rank = MAX (rank, 1);
  for (guint b = 0; b < BENCH_HIST_BUCKETS; b++)
    {
      seen += hist[b];
      if (seen >= rank)
        return bench_hist_bucket_mid_ns (b) / 1000.0;
    }
  return bench_hist_bucket_mid_ns (BENCH_HIST_BUCKETS - 1) / 1000.0;
}

static void
bench_result_set_percentiles (BenchResult   *result,
                              const guint64 *hist)
{
  result->p50_us = bench_hist_percentile_us (hist, 0.50);
  result->p95_us = bench_hist_percentile_us (hist, 0.95);
  result->p99_us = bench_hist_percentile_us (hist, 0.99);
  result->p999_us = bench_hist_percentile_us (hist, 0.999);
}

/* The bus block every scenario shares. */
static char *
bench_bus_yaml (const BenchOptions *options,
                gint                workers)
{
  return g_strdup_printf ("bus:\n"
                          "  workers: %d\n"
                          "  publish_batch: %d\n"
                          "  handler_batch: 32\n"
                          "  mailbox_capacity: 4096\n"
                          "  overflow: block\n"
                          "  drain_timeout_ms: 5000\n"
                          "  pin_workers: %s\n",
                          workers, options->batch, options->pin ? "true" : "false");
}

/* One agent type of the bench plugin. @subscribe is YAML flow items. */
static void
bench_append_type (GString    *yaml,
                   const char *name,
                   guint       pool_size,
                   gboolean    prewarm,
                   const char *subscribe,
                   const char *config)
{
  g_string_append_printf (yaml,
                          "  %s:\n"
                          "    plugin: bench\n"
                          "    pool_size: %u\n"
                          "    prewarm: %s\n"
                          "    subscribe: [{subject: bench.collect, delivery: broadcast},"
                          " {subject: bench.stop, delivery: broadcast}%s%s]\n"
                          "    config: {%s}\n",
                          name, pool_size, prewarm ? "true" : "false",
                          *subscribe != '\0' ? ", " : "", subscribe, config);
}

static GString *
bench_yaml_new (const char         *name,
                const BenchOptions *options,
                gint                workers)
{
  GString *yaml = g_string_new (NULL);
  g_autofree char *bus = bench_bus_yaml (options, workers);

  g_string_append_printf (yaml, "name: bench-%s\n%sagents:\n", name, bus);
  return yaml;
}

/* Loads @yaml, starts its host and hooks @collector to the reports. */
static AhHost *
bench_host_start (GString        *yaml,
                  BenchCollector *collector,
                  GError        **error)
{
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhHost) host = NULL;

  manifest = ah_manifest_load_data (yaml->str, yaml->len, "<bench>", ".", error);
  if (manifest == NULL)
    return NULL;
  host = ah_host_new (g_steal_pointer (&manifest), error);
  if (host == NULL)
    return NULL;
  if (collector != NULL
      && (ah_host_subscribe (host, "bench.report", bench_collector_on_report, collector, error) == 0
          || ah_host_subscribe (host, "bench.done", bench_collector_on_done, collector, error) == 0))
    return NULL;
  if (!ah_host_start (host, error))
    return NULL;
  return g_steal_pointer (&host);
}

static gboolean
bench_wait_idle (AhHost     *host,
                 const char *what,
                 GError    **error)
{
  if (ah_host_wait_idle (host, BENCH_WAIT_US))
    return TRUE;
  g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT,
               "%s did not finish within %d s", what, (int) (BENCH_WAIT_US / G_USEC_PER_SEC));
  return FALSE;
}

/* Asks every agent for its report and waits until all are in. */
static gboolean
bench_collect (AhHost         *host,
               BenchCollector *collector,
               guint           n_agents,
               const char     *what,
               GError        **error)
{
  if (!ah_host_publish (host, "bench.collect", NULL, 0, error)
      || !bench_wait_idle (host, what, error))
    return FALSE;
  g_mutex_lock (&collector->lock);
  if (collector->n_reports != n_agents || collector->bad_reports != 0)
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_FAILED,
                   "%s: %u of %u agents reported (%u malformed reports)", what,
                   collector->n_reports, n_agents, collector->bad_reports);
      g_mutex_unlock (&collector->lock);
      return FALSE;
    }
  g_mutex_unlock (&collector->lock);
  return TRUE;
}

/* lost for sinks: sequence problems they saw, plus, per stream, what
 * never arrived ("every": each sink's shortfall; "share": the group's
 * total against what was sent, its sum as a cross-check). */
static guint64
bench_sink_lost (BenchCollector *collector,
                 guint64         per_stream)
{
  guint64 lost = collector->anomalies + collector->gaps + collector->tail_missing;

  if (collector->every)
    return lost;
  for (guint i = 0; i < collector->streams->len; i++)
    {
      BenchStreamReport *stream = &g_array_index (collector->streams, BenchStreamReport, i);
      guint64 expected_sum = per_stream * (per_stream - (per_stream > 0)) / 2;

      if (stream->received != per_stream)
        lost += stream->received > per_stream ? stream->received - per_stream
                                              : per_stream - stream->received;
      else if (stream->seq_sum != expected_sum)
        lost++;
    }
  return lost;
}

/* throughput, fanout and fanin: publishers into sinks until the bus is
 * idle again. */
static BenchResult *
bench_run_flow (const BenchOptions *options,
                const char         *scenario,
                guint               n_publishers,
                guint               n_sinks,
                gboolean            broadcast,
                guint64             per_publisher,
                GError            **error)
{
  g_autoptr(GString) yaml = bench_yaml_new (scenario, options, options->workers);
  g_autofree char *publisher_config = NULL;
  g_autofree char *sink_config = NULL;
  g_autofree char *sink_subscribe = NULL;
  g_autoptr(AhHost) host = NULL;
  BenchCollector collector;
  BenchResult *result = NULL;
  guint64 start_ns, end_ns;

  publisher_config = g_strdup_printf ("role: publisher, subject: bench.flow, messages: %"
                                      G_GUINT64_FORMAT ", batch: %d, payload: %d",
                                      per_publisher, options->batch, options->payload);
  sink_config = g_strdup_printf ("role: sink, subject: bench.flow, streams: %u, expect: %s", n_publishers,
                                 broadcast || n_sinks == 1 ? "every" : "share");
  sink_subscribe = g_strdup_printf ("{subject: bench.flow, delivery: %s}",
                                    broadcast ? "broadcast" : "queue");
  bench_append_type (yaml, "publisher", n_publishers, TRUE,
                     "{subject: bench.start, delivery: broadcast}", publisher_config);
  bench_append_type (yaml, "sink", n_sinks, TRUE, sink_subscribe, sink_config);

  bench_collector_init (&collector);
  collector.every = broadcast || n_sinks == 1;
  collector.stream_expected = per_publisher;
  host = bench_host_start (yaml, &collector, error);
  if (host == NULL)
    goto out;

  start_ns = bench_now_ns ();
  if (!ah_host_publish (host, "bench.start", NULL, 0, error)
      || !bench_wait_idle (host, scenario, error))
    goto out;
  end_ns = bench_now_ns ();
  if (!bench_collect (host, &collector, n_publishers + n_sinks, scenario, error))
    goto out;

  result = bench_result_new (scenario);
  result->seconds = (gdouble) (end_ns - start_ns) / 1e9;
  /* Handler deliveries: what fanout multiplies. */
  result->messages = collector.handled;
  result->lost = bench_sink_lost (&collector, per_publisher);
  if (collector.sent != per_publisher * n_publishers)
    result->lost += per_publisher * n_publishers - MIN (collector.sent, per_publisher * n_publishers);
  bench_result_set_percentiles (result, collector.hists[BENCH_HIST_LATENCY]);
  g_string_append_printf (result->extra_json, ", \"published\": %" G_GUINT64_FORMAT
                          ", \"publishers\": %u, \"sinks\": %u, \"delivery\": \"%s\"",
                          collector.sent, n_publishers, n_sinks, broadcast ? "broadcast" : "queue");
  g_string_append_printf (result->extra_text, "%u pub -> %u sink%s (%s)",
                          n_publishers, n_sinks, n_sinks > 1 ? "s" : "",
                          broadcast ? "broadcast" : "queue");
  bench_result_add_steals (result, host);

out:
  g_clear_pointer (&host, ah_host_free);
  bench_collector_clear (&collector);
  return result;
}

static guint64
bench_rtt_rounds (const BenchOptions *options)
{
  return (guint64) CLAMP (options->messages / 1000, 10, 100000);
}

/* One rtt case. @load adds a publisher and a sink that keep the bus busy
 * for the whole measurement; @idle makes one round trip per trigger,
 * each after a pause long enough for both workers to park. */
static BenchResult *
bench_run_rtt_case (const BenchOptions *options,
                    const char         *scenario,
                    gint                workers,
                    gboolean            load,
                    gboolean            idle,
                    GError            **error)
{
  g_autoptr(GString) yaml = bench_yaml_new ("rtt", options, workers);
  g_autofree char *requester_config = NULL;
  g_autofree char *load_config = NULL;
  g_autofree char *payload_config = g_strdup_printf ("role: responder, payload: %d", options->payload);
  g_autoptr(AhHost) host = NULL;
  BenchCollector collector;
  BenchResult *result = NULL;
  guint64 rounds = idle ? (guint64) CLAMP (options->messages / 50000, 10, 200)
                        : bench_rtt_rounds (options);
  guint64 start_ns, end_ns;
  AhAgentId requester, responder;
  guint n_agents = 2;

  requester_config = g_strdup_printf ("role: requester, subject: bench.rtt, rounds: %"
                                      G_GUINT64_FORMAT ", chain: %s, payload: %d",
                                      rounds, idle ? "false" : "true", options->payload);
  bench_append_type (yaml, "requester", 1, FALSE,
                     "{subject: bench.start, delivery: broadcast}", requester_config);
  bench_append_type (yaml, "responder", 1, FALSE, "bench.rtt", payload_config);
  if (load)
    {
      load_config = g_strdup_printf ("role: publisher, subject: bench.load, messages: 0, "
                                     "batch: %d, payload: %d", options->batch, options->payload);
      bench_append_type (yaml, "loadpub", 1, TRUE,
                         "{subject: bench.loadstart, delivery: broadcast}", load_config);
      bench_append_type (yaml, "loadsink", 1, TRUE, "bench.load",
                         "role: sink, subject: bench.load, streams: 1, expect: every");
      n_agents += 2;
    }

  bench_collector_init (&collector);
  host = bench_host_start (yaml, &collector, error);
  if (host == NULL)
    goto out;
  /* Spawned one after the other, the two get consecutive places, which
   * the bus spreads over its workers; where they really ran is read
   * back from their reports (thread ids). */
  requester = ah_host_spawn (host, "requester", error);
  if (requester == AH_AGENT_ID_NONE)
    goto out;
  responder = ah_host_spawn (host, "responder", error);
  if (responder == AH_AGENT_ID_NONE)
    goto out;
  if (load && !ah_host_publish (host, "bench.loadstart", NULL, 0, error))
    goto out;

  start_ns = bench_now_ns ();
  if (idle)
    {
      for (guint64 i = 0; i < rounds; i++)
        {
          if (!bench_wait_idle (host, scenario, error))
            goto out;
          /* Not a synchronisation: the pause is what is measured, long
           * enough for an idle worker to park. */
          g_usleep (BENCH_IDLE_PAUSE_US);
          if (!ah_host_publish (host, "bench.start", NULL, 0, error))
            goto out;
        }
    }
  else
    {
      gint64 deadline = g_get_monotonic_time () + BENCH_WAIT_US;

      if (!ah_host_publish (host, "bench.start", NULL, 0, error))
        goto out;
      g_mutex_lock (&collector.lock);
      while (collector.n_done == 0)
        if (!g_cond_wait_until (&collector.cond, &collector.lock, deadline))
          break;
      g_mutex_unlock (&collector.lock);
      if (collector.n_done == 0)
        {
          g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT,
                       "%s did not finish within %d s", scenario,
                       (int) (BENCH_WAIT_US / G_USEC_PER_SEC));
          goto out;
        }
    }
  if (load && !ah_host_publish (host, "bench.stop", NULL, 0, error))
    goto out;
  if (!bench_wait_idle (host, scenario, error))
    goto out;
  end_ns = bench_now_ns ();
  if (!bench_collect (host, &collector, n_agents, scenario, error))
    goto out;

  result = bench_result_new (scenario);
  result->seconds = (gdouble) (end_ns - start_ns) / 1e9;
  result->messages = collector.completed;
  /* Every request gets exactly one answer, its own: anything else is a
   * lost or misdelivered message. The load sink checks its stream. */
  result->lost = collector.failures + collector.anomalies + collector.gaps
    + (rounds - MIN (rounds, collector.completed));
  bench_result_set_percentiles (result, collector.hists[BENCH_HIST_LATENCY]);
  bench_result_add_steals (result, host);
  {
    /* Where the two agents ran last, and how often either moved (a
     * worker out of work may take one over): a pair that moved onto one
     * worker says so. */
    gboolean same = collector.thread_ids[BENCH_ROLE_REQUESTER]
      == collector.thread_ids[BENCH_ROLE_RESPONDER];
    guint64 moves = collector.moves[BENCH_ROLE_REQUESTER] + collector.moves[BENCH_ROLE_RESPONDER];

    /* Each stayed on the thread of its first call, and those differ. */
    result->pair_apart = moves == 0
                         && collector.first_thread_ids[BENCH_ROLE_REQUESTER]
                            != collector.first_thread_ids[BENCH_ROLE_RESPONDER];

    g_string_append_printf (result->extra_json,
                            ", \"round_trips\": %" G_GUINT64_FORMAT ", \"workers\": %d"
                            ", \"same_thread\": %s, \"moves\": %" G_GUINT64_FORMAT
                            ", \"load\": %s, \"from_idle\": %s",
                            collector.completed, workers, same ? "true" : "false", moves,
                            load ? "true" : "false", idle ? "true" : "false");
    if (load)
      g_string_append_printf (result->extra_json, ", \"load_messages\": %" G_GUINT64_FORMAT,
                              collector.handled - collector.completed - collector.failures);
    g_string_append_printf (result->extra_text, "%s thread%s%s%s", same ? "same" : "two",
                            same ? "" : "s", moves > 0 ? " (moved)" : "",
                            load ? ", under load" : idle ? ", from idle" : "");
  }

out:
  g_clear_pointer (&host, ah_host_free);
  bench_collector_clear (&collector);
  return result;
}

#define BENCH_RTT_ATTEMPTS 5

static gboolean
bench_run_rtt (const BenchOptions *options,
               GPtrArray          *results,
               GError            **error)
{
  gint across = options->workers == 1 ? 2 : options->workers;
  struct {
    const char *name;
    gint        workers;
    gboolean    load;
    gboolean    idle;
  } cases[] = {
    /* One worker is the only way the public API guarantees two agents
     * share one. */
    { "rtt-same-worker", 1, FALSE, FALSE },
    { "rtt-across-workers", across, FALSE, FALSE },
    { "rtt-under-load", across, TRUE, FALSE },
    { "rtt-from-idle", across, FALSE, TRUE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      BenchResult *result = NULL;
      guint attempt;

      /* The across cases measure two agents on two workers. A worker out
       * of work may take over one of them (work stealing), and under
       * load that can put both on one worker, where a round trip costs a
       * third: such a run is done again, up to BENCH_RTT_ATTEMPTS times,
       * and the JSON says how many it took and whether the last one
       * kept them apart. */
      for (attempt = 1; attempt <= BENCH_RTT_ATTEMPTS; attempt++)
        {
          g_clear_pointer (&result, bench_result_free);
          result = bench_run_rtt_case (options, cases[i].name, cases[i].workers,
                                       cases[i].load, cases[i].idle, error);
          if (result == NULL)
            return FALSE;
          if (cases[i].workers == 1 || result->pair_apart)
            break;
        }
      g_string_append_printf (result->extra_json, ", \"apart\": %s, \"attempts\": %u",
                              result->pair_apart ? "true" : "false",
                              MIN (attempt, BENCH_RTT_ATTEMPTS));
      g_ptr_array_add (results, result);
    }
  return TRUE;
}

/* Resident bytes of the process, from /proc/self/statm. */
static guint64
bench_rss_bytes (void)
{
  g_autofree char *text = NULL;
  guint64 size = 0, resident = 0;

  if (!g_file_get_contents ("/proc/self/statm", &text, NULL, NULL)
      || sscanf (text, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, &size, &resident) != 2)
    return 0;
  return resident * (guint64) sysconf (_SC_PAGESIZE);
}

/* Peak resident bytes (VmHWM), which bench_rss_peak_reset() restarts
 * from the current size where the kernel allows it. */
static guint64
bench_rss_peak_bytes (void)
{
  g_autofree char *text = NULL;
  const char *line;
  guint64 kib = 0;

  if (!g_file_get_contents ("/proc/self/status", &text, NULL, NULL))
    return 0;
  line = strstr (text, "VmHWM:");
  if (line == NULL || sscanf (line, "VmHWM: %" G_GUINT64_FORMAT, &kib) != 1)
    return 0;
  return kib * 1024;
}

static gboolean
bench_rss_peak_reset (void)
{
  /* Written in place: g_file_set_contents() would rename a temporary
   * file over it, which /proc refuses. */
  int fd = open ("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  gboolean done;

  if (fd < 0)
    return FALSE;
  done = write (fd, "5", 1) == 1;
  close (fd);
  return done;
}

static void
bench_record_ns (guint64 *hist,
                 guint64  ns)
{
  hist[bench_hist_bucket (ns)]++;
}

#define BENCH_SPAWN_SAMPLE_EVERY 8

static BenchResult *
bench_run_spawn_cycle (const BenchOptions *options,
                       GError            **error)
{
  g_autoptr(GString) yaml = bench_yaml_new ("spawn", options, options->workers);
  g_autoptr(AhHost) host = NULL;
  guint n_spawn = MIN ((guint) options->spawn_agents, BENCH_SPAWN_CYCLE_MAX);
  g_autofree AhAgentId *ids = g_new0 (AhAgentId, n_spawn);
  g_autofree guint64 *hist = g_new0 (guint64, BENCH_HIST_BUCKETS);
  BenchResult *result = NULL;
  guint64 phase_ns[3] = { 0 };
  guint64 lost = 0;

  bench_append_type (yaml, "idle", n_spawn, FALSE, "", "role: idle");
  host = bench_host_start (yaml, NULL, error);
  if (host == NULL)
    return NULL;

  /* Phase 0: cold (the pool has never held an agent), 1: terminate,
   * 2: warm (every slot was used and given back). */
  for (guint phase = 0; phase < 3; phase++)
    {
      guint64 start_ns = bench_now_ns ();

      for (guint i = 0; i < n_spawn; i++)
        {
          /* The per-operation times come from every 8th warm spawn: two
           * clock reads around each would add about 50 ns to every
           * operation of the phase's average, on this kind of VM. */
          gboolean sampled = phase == 2 && i % BENCH_SPAWN_SAMPLE_EVERY == 0;
          guint64 op_ns = sampled ? bench_now_ns () : 0;

          if (phase == 1)
            {
              if (!ah_host_terminate (host, ids[i], error))
                return NULL;
            }
          else
            {
              ids[i] = ah_host_spawn (host, "idle", error);
              if (ids[i] == AH_AGENT_ID_NONE)
                return NULL;
            }
          if (sampled)
            bench_record_ns (hist, bench_now_ns () - op_ns);
        }
      phase_ns[phase] = bench_now_ns () - start_ns;
    }
  {
    AhHostStats stats;

    ah_host_get_stats (host, &stats);
    if (stats.n_agents != n_spawn)
      lost = (guint64) ABS ((gint64) stats.n_agents - (gint64) n_spawn);
  }

  result = bench_result_new ("spawn-warm");
  result->messages = n_spawn;
  result->seconds = (gdouble) phase_ns[2] / 1e9;
  result->lost = lost;
  bench_result_set_percentiles (result, hist);
  g_string_append_printf (result->extra_json,
                          ", \"agents\": %u, \"warm_ns_per_agent\": %.0f"
                          ", \"cold_ns_per_agent\": %.0f, \"terminate_ns_per_agent\": %.0f",
                          n_spawn,
                          (gdouble) phase_ns[2] / n_spawn,
                          (gdouble) phase_ns[0] / n_spawn,
                          (gdouble) phase_ns[1] / n_spawn);
  g_string_append_printf (result->extra_text,
                          "per agent: warm %.0f ns, cold %.0f ns, terminate %.0f ns",
                          (gdouble) phase_ns[2] / n_spawn,
                          (gdouble) phase_ns[0] / n_spawn,
                          (gdouble) phase_ns[1] / n_spawn);
  return result;
}

/* Pre-warm of @n_types pools of @per_type idle agents, and what each
 * costs in memory beyond the plugin's own state. @scenario names the
 * case: "prewarm-4xN" measures the parallel pre-warm, "hold-N" (one
 * pool) how many idle agents the host can hold and what each costs. */
static BenchResult *
bench_run_prewarm (const BenchOptions *options,
                   const char         *scenario,
                   guint               n_types,
                   guint               per_type,
                   guint32             state_size,
                   GError            **error)
{
  g_autoptr(GString) yaml = bench_yaml_new ("prewarm", options, options->workers);
  g_autoptr(AhHost) host = NULL;
  BenchCollector collector;
  BenchResult *result = NULL;
  AhHostStats stats;
  struct mallinfo2 heap_before, heap_after;
  guint64 rss_before, rss_after, start_ns, end_ns;
  guint n_agents = n_types * per_type;
  gdouble rss_per_agent, heap_per_agent;

  for (guint i = 0; i < n_types; i++)
    {
      g_autofree char *name = g_strdup_printf ("idle%u", i);

      bench_append_type (yaml, name, per_type, TRUE, "", "role: idle");
    }
  bench_collector_init (&collector);
  malloc_trim (0);
  rss_before = bench_rss_bytes ();
  heap_before = mallinfo2 ();
  start_ns = bench_now_ns ();
  host = bench_host_start (yaml, &collector, error);
  if (host == NULL)
    goto out;
  end_ns = bench_now_ns ();
  rss_after = bench_rss_bytes ();
  heap_after = mallinfo2 ();
  ah_host_get_stats (host, &stats);
  /* In the small pools a message to each agent proves they all run, and
   * a report gives the plugin's state size; in the large ones the host's
   * count of live agents has to do, or the check would cost more than
   * what it checks. */
  if (per_type <= 1000 && !bench_collect (host, &collector, n_agents, scenario, error))
    goto out;
  if (per_type > 1000)
    collector.state_size = state_size;

  rss_per_agent = (gdouble) (rss_after - MIN (rss_after, rss_before)) / n_agents;
  heap_per_agent = (gdouble) ((heap_after.uordblks + heap_after.hblkhd)
                              - MIN (heap_after.uordblks + heap_after.hblkhd,
                                     heap_before.uordblks + heap_before.hblkhd)) / n_agents;
  result = bench_result_new (scenario);
  result->messages = n_agents;
  result->seconds = stats.prewarm_ms / 1000.0;
  result->lost = (guint64) ABS ((gint64) stats.n_agents - (gint64) n_agents);
  result->state_size = collector.state_size;
  g_string_append_printf (result->extra_json,
                          ", \"agents\": %u, \"prewarm_ms\": %.3f, \"start_ms\": %.3f"
                          ", \"state_bytes\": %u, \"rss_bytes_per_agent\": %.0f"
                          ", \"heap_bytes_per_agent\": %.0f"
                          ", \"bytes_per_agent_beyond_state\": %.0f",
                          n_agents, stats.prewarm_ms, (gdouble) (end_ns - start_ns) / 1e6,
                          collector.state_size, rss_per_agent, heap_per_agent,
                          MAX (rss_per_agent, heap_per_agent) - collector.state_size);
  g_string_append_printf (result->extra_text,
                          "pre-warm %.1f ms; per idle agent: %.0f B RSS, %.0f B heap, state %u B, "
                          "host %.0f B beyond it",
                          stats.prewarm_ms, rss_per_agent, heap_per_agent, collector.state_size,
                          MAX (rss_per_agent, heap_per_agent) - collector.state_size);

out:
  g_clear_pointer (&host, ah_host_free);
  bench_collector_clear (&collector);
  return result;
}

/* A batch or wave spawn that started nobody: the call's own error, or
 * else the first agent's. */
static void
bench_spawn_failed (const AhSpawnResult *spawned,
                    guint                n,
                    const char          *what,
                    GError             **error)
{
  if (error == NULL || *error != NULL)
    return;
  for (guint i = 0; i < n; i++)
    if (spawned[i].error != NULL)
      {
        g_set_error (error, spawned[i].error->domain, spawned[i].error->code,
                     "%s: no agent started: %s", what, spawned[i].error->message);
        return;
      }
  g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_FAILED, "%s: no agent started", what);
}

/* Host time of ah_host_spawn_batch(): @n agents at once into a pool
 * that never held one (cold: the slots were allocated with the pool but
 * never started), then, once all are terminated, again (warm: every
 * slot used and given back). */
static BenchResult *
bench_run_spawn_batch (const BenchOptions *options,
                       guint               n,
                       GError            **error)
{
  g_autoptr(GString) yaml = bench_yaml_new ("spawn-batch", options, options->workers);
  g_autofree char *scenario = g_strdup_printf ("spawn-batch-%u", n);
  g_autofree AhSpawnResult *spawned = g_new0 (AhSpawnResult, n);
  g_autoptr(AhHost) host = NULL;
  BenchResult *result = NULL;
  guint64 phase_ns[3] = { 0 };
  guint started[2] = { 0 };

  bench_append_type (yaml, "idle", n, FALSE, "", "role: idle");
  host = bench_host_start (yaml, NULL, error);
  if (host == NULL)
    return NULL;

  /* Phase 0: cold batch, 1: terminate them one by one, 2: warm batch. */
  for (guint phase = 0; phase < 3; phase++)
    {
      guint64 start_ns = bench_now_ns ();

      if (phase == 1)
        {
          for (guint i = 0; i < n; i++)
            if (spawned[i].id != AH_AGENT_ID_NONE
                && !ah_host_terminate (host, spawned[i].id, error))
              {
                ah_spawn_results_clear (spawned, n);
                return NULL;
              }
        }
      else
        {
          started[phase / 2] = ah_host_spawn_batch (host, "idle", n, spawned, error);
          if (started[phase / 2] == 0)
            {
              bench_spawn_failed (spawned, n, scenario, error);
              ah_spawn_results_clear (spawned, n);
              return NULL;
            }
        }
      phase_ns[phase] = bench_now_ns () - start_ns;
      if (phase == 1)
        ah_spawn_results_clear (spawned, n);
    }
  ah_spawn_results_clear (spawned, n);

  result = bench_result_new (scenario);
  result->messages = n;
  result->seconds = (gdouble) phase_ns[2] / 1e9;
  /* An idle agent never refuses to start: any that did not is lost. */
  result->lost = (guint64) (n - started[0]) + (n - started[1]);
  g_string_append_printf (result->extra_json,
                          ", \"agents\": %u, \"warm_ns_per_agent\": %.1f"
                          ", \"cold_ns_per_agent\": %.1f, \"terminate_ns_per_agent\": %.1f"
                          ", \"failed\": %u",
                          n, (gdouble) phase_ns[2] / n, (gdouble) phase_ns[0] / n,
                          (gdouble) phase_ns[1] / n, (n - started[0]) + (n - started[1]));
  g_string_append_printf (result->extra_text,
                          "one call, per agent: warm %.1f ns, cold %.1f ns (terminate %.0f ns)",
                          (gdouble) phase_ns[2] / n, (gdouble) phase_ns[0] / n,
                          (gdouble) phase_ns[1] / n);
  return result;
}

static int
bench_compare_doubles (gconstpointer a,
                       gconstpointer b)
{
  gdouble x = *(const gdouble *) a, y = *(const gdouble *) b;

  return x < y ? -1 : x > y;
}

/* ah_host_spawn_waves(): @n_waves waves of @wave_size agents, @pause_ms
 * apart. The API returns once all are spawned; each wave's own time is
 * read back from its agents' spawn times (AhAgentInfo.spawn_time_us):
 * from its first agent's to its last's. The gap before a wave (from
 * the previous wave's last spawn to its first) shows the pause. */
static BenchResult *
bench_run_spawn_waves (const BenchOptions *options,
                       guint               n_waves,
                       guint               wave_size,
                       guint               pause_ms,
                       GError            **error)
{
  g_autoptr(GString) yaml = bench_yaml_new ("spawn-waves", options, options->workers);
  g_autofree char *scenario = g_strdup_printf ("spawn-waves-%ux%u", n_waves, wave_size);
  guint n = n_waves * wave_size;
  g_autofree AhSpawnResult *spawned = g_new0 (AhSpawnResult, n);
  g_autofree gdouble *wave_ms = g_new0 (gdouble, n_waves);
  g_autofree gdouble *sorted_ms = NULL;
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GString) waves_json = g_string_new (NULL);
  BenchResult *result = NULL;
  gint64 previous_last_us = 0;
  gdouble min_gap_ms = 0;
  guint64 start_ns, end_ns;
  guint started;

  bench_append_type (yaml, "idle", n, FALSE, "", "role: idle");
  host = bench_host_start (yaml, NULL, error);
  if (host == NULL)
    return NULL;

  start_ns = bench_now_ns ();
  started = ah_host_spawn_waves (host, "idle", n, wave_size, pause_ms, spawned, error);
  end_ns = bench_now_ns ();
  if (started == 0)
    {
      bench_spawn_failed (spawned, n, scenario, error);
      goto out;
    }

  for (guint w = 0; w < n_waves; w++)
    {
      gint64 first_us = G_MAXINT64, last_us = 0;

      for (guint i = w * wave_size; i < (w + 1) * wave_size; i++)
        {
          AhAgentInfo info;

          if (spawned[i].id == AH_AGENT_ID_NONE
              || !ah_host_get_agent_info (host, spawned[i].id, &info, error))
            {
              if (spawned[i].id != AH_AGENT_ID_NONE)
                goto out;
              continue;
            }
          first_us = MIN (first_us, info.spawn_time_us);
          last_us = MAX (last_us, info.spawn_time_us);
        }
      if (last_us == 0)
        continue;
      wave_ms[w] = (gdouble) (last_us - first_us) / 1000.0;
      if (w > 0 && previous_last_us != 0)
        {
          gdouble gap_ms = (gdouble) (first_us - previous_last_us) / 1000.0;

          min_gap_ms = w == 1 ? gap_ms : MIN (min_gap_ms, gap_ms);
        }
      previous_last_us = last_us;
      g_string_append_printf (waves_json, "%s%.3f", w == 0 ? "" : ", ", wave_ms[w]);
    }
  sorted_ms = g_memdup2 (wave_ms, n_waves * sizeof (gdouble));
  qsort (sorted_ms, n_waves, sizeof (gdouble), bench_compare_doubles);

  result = bench_result_new (scenario);
  result->messages = n;
  result->seconds = (gdouble) (end_ns - start_ns) / 1e9;
  result->lost = n - started;
  g_string_append_printf (result->extra_json,
                          ", \"agents\": %u, \"waves\": %u, \"wave_size\": %u, \"pause_ms\": %u"
                          ", \"wave_ms\": [%s], \"wave_ms_p50\": %.3f, \"wave_ms_max\": %.3f"
                          ", \"min_gap_ms\": %.3f, \"failed\": %u",
                          n, n_waves, wave_size, pause_ms, waves_json->str,
                          sorted_ms[(n_waves - 1) / 2], sorted_ms[n_waves - 1], min_gap_ms,
                          n - started);
  g_string_append_printf (result->extra_text,
                          "%u waves of %u, %u ms apart: per wave p50 %.3f ms, max %.3f ms; "
                          "shortest gap %.3f ms",
                          n_waves, wave_size, pause_ms, sorted_ms[(n_waves - 1) / 2],
                          sorted_ms[n_waves - 1], min_gap_ms);

out:
  ah_spawn_results_clear (spawned, n);
  return result;
}

/* The restart case fails agents on purpose, each failure logged by the
 * host: counted here instead of flooding the table. */
static void
bench_count_log_message (const char     *log_domain,
                         GLogLevelFlags  log_level,
                         const char     *message,
                         gpointer        user_data)
{
  g_atomic_int_inc ((gint *) user_data);
}

/* The cost of restarting a failed agent: a pool of the flaky plugin
 * whose every call fails (fail_every 1), under one_for_one with a budget
 * it never reaches; @n messages go in one at a time, so each fails one
 * call and costs one restart. restart_p50_us is the host's own measure
 * (AhTypeStats), from the failure to the agent running again. */
static BenchResult *
bench_run_restart (const BenchOptions *options,
                   guint               n,
                   GError            **error)
{
  g_autoptr(GString) yaml = bench_yaml_new ("restart", options, options->workers);
  g_autoptr(AhHost) host = NULL;
  BenchResult *result = NULL;
  AhTypeStats stats;
  guint64 start_ns, end_ns;
  gint logged = 0;
  guint handler_id;

  g_string_append_printf (yaml,
                          "  restart:\n"
                          "    plugin: flaky\n"
                          "    pool_size: 4\n"
                          "    subscribe: [bench.fail]\n"
                          "    supervision: {policy: one_for_one, max_restarts: %u, period_ms: 86400000,"
                          " failed_messages: dead_letter}\n"
                          "    config: {fail_every: 1}\n", n);
  host = bench_host_start (yaml, NULL, error);
  if (host == NULL)
    return NULL;

  handler_id = g_log_set_handler (G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, bench_count_log_message,
                                  &logged);
  start_ns = bench_now_ns ();
  for (guint i = 0; i < n; i++)
    if (!ah_host_publish (host, "bench.fail", "x", 1, error)
        || !bench_wait_idle (host, "restart", error))
      {
        g_log_remove_handler (G_LOG_DOMAIN, handler_id);
        return NULL;
      }
  end_ns = bench_now_ns ();
  /* Stopped before its stats are read: a restart still under way when
   * the bus went idle is then over and counted. */
  ah_host_request_stop (host, 0);
  ah_host_run (host);
  g_log_remove_handler (G_LOG_DOMAIN, handler_id);
  if (!ah_host_get_type_stats (host, 0, &stats))
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_FAILED, "restart: the host has no agent type");
      return NULL;
    }

  result = bench_result_new ("restart");
  result->messages = stats.restarted;
  result->seconds = (gdouble) (end_ns - start_ns) / 1e9;
  /* Every message fails one call, and every failure is one restart. */
  result->lost = (guint64) n - MIN ((guint64) n, stats.restarted);
  g_string_append_printf (result->extra_json,
                          ", \"agents\": %u, \"failures\": %" G_GUINT64_FORMAT
                          ", \"restarted\": %" G_GUINT64_FORMAT ", \"restart_p50_us\": %.3f"
                          ", \"failure_log_lines\": %d",
                          stats.pool_size, stats.failed, stats.restarted, stats.restart_p50_us,
                          g_atomic_int_get (&logged));
  g_string_append_printf (result->extra_text,
                          "%" G_GUINT64_FORMAT " failures, %" G_GUINT64_FORMAT
                          " restarts: restart p50 %.2f us (failure to running again)",
                          stats.failed, stats.restarted, stats.restart_p50_us);
  return result;
}

static gboolean
bench_run_spawn (const BenchOptions *options,
                 GPtrArray          *results,
                 GError            **error)
{
  guint n = (guint) options->spawn_agents;
  guint32 state_size;
  BenchResult *result = bench_run_spawn_cycle (options, error);

  if (result == NULL)
    return FALSE;
  g_ptr_array_add (results, result);
  result = bench_run_prewarm (options, "prewarm-4x1000", 4, 1000, 0, error);
  if (result == NULL)
    return FALSE;
  g_ptr_array_add (results, result);
  state_size = result->state_size;
  {
    g_autofree char *scenario = g_strdup_printf ("prewarm-4x%u", n);

    result = bench_run_prewarm (options, scenario, 4, n, state_size, error);
  }
  if (result == NULL)
    return FALSE;
  g_ptr_array_add (results, result);
  result = bench_run_spawn_batch (options, MAX (n / 10, 1), error);
  if (result == NULL)
    return FALSE;
  g_ptr_array_add (results, result);
  result = bench_run_spawn_batch (options, n, error);
  if (result == NULL)
    return FALSE;
  g_ptr_array_add (results, result);
  result = bench_run_spawn_waves (options, BENCH_WAVES, MAX (n / BENCH_WAVES, 1),
                                  BENCH_WAVE_PAUSE_MS, error);
  if (result == NULL)
    return FALSE;
  g_ptr_array_add (results, result);
  result = bench_run_restart (options, MIN (n, BENCH_RESTARTS), error);
  if (result == NULL)
    return FALSE;
  g_ptr_array_add (results, result);
  {
    g_autofree char *scenario = g_strdup_printf ("hold-%u", BENCH_HOLD_FACTOR * n);

    result = bench_run_prewarm (options, scenario, 1, BENCH_HOLD_FACTOR * n, state_size, error);
  }
  if (result == NULL)
    return FALSE;
  g_ptr_array_add (results, result);
  return TRUE;
}

typedef struct {
  const char *name;
  guint       agents;
  guint       messages;
  guint       tasks;
  gboolean    sustained;
} BenchStage3Case;

/* The replaced manager's validation scenarios, with its counts. */
static const BenchStage3Case bench_stage3_cases[] = {
  { "baseline", 100, 500, 200, FALSE },
  { "high-concurrency", 1000, 5000, 2000, FALSE },
  { "peak-load", 5000, 25000, 10000, FALSE },
  { "ultra-high-load", 10000, 50000, 20000, FALSE },
  { "sustained-load", 2000, 10000, 5000, TRUE },
  { "communication-intensive", 500, 50000, 1000, FALSE },
  { "task-execution-heavy", 1000, 2000, 25000, FALSE },
};

/* About how many messages and tasks a paced stage3 wave sets going: a
 * publisher's batch. */
#define BENCH_STAGE3_WAVE_OPS 256

/* How many agents a paced wave of @stage sets going: at least one. */
static guint
bench_stage3_wave_agents (const BenchStage3Case *stage)
{
  guint ops_per_agent = MAX (1u, (stage->messages + stage->tasks) / stage->agents);

  return CLAMP (BENCH_STAGE3_WAVE_OPS / ops_per_agent, 1u, stage->agents);
}

/* Sets agents [first, first + n) going: each gets its share of the
 * messages (to random agents) and of the tasks. */
static gboolean
bench_stage3_send (AhHost                *host,
                   const BenchStage3Case *stage,
                   const AhAgentId       *ids,
                   guint                  first,
                   guint                  n,
                   guint64               *sent_per_agent,
                   GRand                 *rand,
                   guint                  payload,
                   GError               **error)
{
  for (guint i = first; i < first + n; i++)
    {
      BenchPeerGo go = {
        .n_messages = stage->messages / stage->agents + (i < stage->messages % stage->agents),
        .n_tasks = stage->tasks / stage->agents + (i < stage->tasks % stage->agents),
        .payload = payload,
      };
      gsize size = sizeof go + go.n_messages * sizeof (AhAgentId);
      g_autofree guint8 *data = g_malloc (size);

      memcpy (data, &go, sizeof go);
      for (guint m = 0; m < go.n_messages; m++)
        {
          AhAgentId to = ids[g_rand_int_range (rand, 0, (gint32) stage->agents)];

          memcpy (data + sizeof go + m * sizeof to, &to, sizeof to);
        }
      sent_per_agent[i] += go.n_messages;
      if (!ah_host_send (host, ids[i], "bench.s3.go", data, size, error))
        return FALSE;
    }
  return TRUE;
}

/* One round of a stage3 case, every agent once: all at the same
 * instant (@burst), or in waves of about BENCH_STAGE3_WAVE_OPS messages
 * and tasks, each wave once the previous one is done. */
static gboolean
bench_stage3_round (AhHost                *host,
                    const char            *scenario,
                    const BenchStage3Case *stage,
                    gboolean               burst,
                    const AhAgentId       *ids,
                    guint64               *sent_per_agent,
                    GRand                 *rand,
                    guint                  payload,
                    GError               **error)
{
  guint wave = burst ? stage->agents : bench_stage3_wave_agents (stage);

  for (guint first = 0; first < stage->agents; first += wave)
    if (!bench_stage3_send (host, stage, ids, first, MIN (wave, stage->agents - first),
                            sent_per_agent, rand, payload, error)
        || !bench_wait_idle (host, scenario, error))
      return FALSE;
  return TRUE;
}

static BenchResult *
bench_run_stage3_case (const BenchOptions    *options,
                       const BenchStage3Case *stage,
                       gboolean               burst,
                       GError               **error)
{
  g_autoptr(GString) yaml = bench_yaml_new ("stage3", options, options->workers);
  g_autofree char *scenario = g_strdup_printf ("stage3-%s%s", stage->name, burst ? "-burst" : "");
  g_autofree AhAgentId *ids = g_new0 (AhAgentId, stage->agents);
  g_autofree guint64 *sent_per_agent = g_new0 (guint64, stage->agents);
  g_autofree guint64 *spawn_hist = g_new0 (guint64, BENCH_HIST_BUCKETS);
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GRand) rand = g_rand_new_with_seed (3);
  BenchCollector collector;
  BenchResult *result = NULL;
  guint64 start_ns, end_ns, expected_sum = 0, messages = 0, tasks = 0, rounds = 0;
  guint64 peak_rss;
  gboolean peak_reset = bench_rss_peak_reset ();
  /* About 50 bytes, as the old scenarios sent. */
  guint payload = 50;
  gdouble success;

  bench_append_type (yaml, "peer", stage->agents, FALSE, "bench.s3.task", "role: peer, payload: 50");
  bench_collector_init (&collector);
  host = bench_host_start (yaml, &collector, error);
  if (host == NULL)
    goto out;
  for (guint i = 0; i < stage->agents; i++)
    {
      guint64 op_ns = bench_now_ns ();

      ids[i] = ah_host_spawn (host, "peer", error);
      if (ids[i] == AH_AGENT_ID_NONE)
        goto out;
      bench_record_ns (spawn_hist, bench_now_ns () - op_ns);
    }

  start_ns = bench_now_ns ();
  do
    {
      if (!bench_stage3_round (host, scenario, stage, burst, ids, sent_per_agent, rand, payload,
                               error))
        goto out;
      messages += stage->messages;
      tasks += stage->tasks;
      rounds++;
    }
  while (stage->sustained
         && (gdouble) (bench_now_ns () - start_ns) / 1e9 < options->sustained_seconds);
  end_ns = bench_now_ns ();
  if (!bench_collect (host, &collector, stage->agents, scenario, error))
    goto out;
  peak_rss = bench_rss_peak_bytes ();

  for (guint i = 0; i < stage->agents; i++)
    expected_sum += sent_per_agent[i] * (sent_per_agent[i] - (sent_per_agent[i] > 0)) / 2;
  result = bench_result_new (scenario);
  result->seconds = (gdouble) (end_ns - start_ns) / 1e9;
  result->messages = messages + tasks * 2;
  result->lost = collector.anomalies + (messages - MIN (messages, collector.completed))
    + (tasks - MIN (tasks, collector.tasks_ok))
    + (collector.completed == messages && collector.seq_sum != expected_sum);
  bench_result_set_percentiles (result, collector.hists[BENCH_HIST_LATENCY]);
  success = 100.0 * (gdouble) (MIN (messages, collector.completed) + MIN (tasks, collector.tasks_ok))
    / (gdouble) (messages + tasks);
  bench_result_add_steals (result, host);
  {
    gdouble spawn_p95 = bench_hist_percentile_us (spawn_hist, 0.95);
    gdouble task_p95 = bench_hist_percentile_us (collector.hists[BENCH_HIST_TASK], 0.95);

    g_string_append_printf (result->extra_json,
                            ", \"arrival\": \"%s\", \"wave_agents\": %u"
                            ", \"agents\": %u, \"agent_messages\": %" G_GUINT64_FORMAT
                            ", \"tasks\": %" G_GUINT64_FORMAT ", \"rounds\": %" G_GUINT64_FORMAT
                            ", \"spawn_p95_us\": %.3f, \"message_p95_us\": %.3f"
                            ", \"task_p95_us\": %.3f, \"success_percent\": %.2f"
                            ", \"peak_rss_bytes\": %" G_GUINT64_FORMAT ", \"peak_rss_scope\": \"%s\""
                            ", \"old_targets\": {\"spawn_p95_ms\": [80, 200], \"comms_p95_ms\": [3, 10]"
                            ", \"success_percent\": [80, 95]}",
                            burst ? "burst" : "paced",
                            burst ? stage->agents : bench_stage3_wave_agents (stage),
                            stage->agents, messages, tasks, rounds, spawn_p95, result->p95_us,
                            task_p95, success, peak_rss, peak_reset ? "scenario" : "process");
    g_string_append_printf (result->extra_text,
                            "%u agents, %" G_GUINT64_FORMAT " msgs, %" G_GUINT64_FORMAT " tasks, %s: "
                            "spawn p95 %.1f us, msg p95 %.1f us, task p95 %.1f us, "
                            "success %.2f%%, peak RSS %.0f MiB (old targets: spawn p95 "
                            "80-200 ms, comms p95 3-10 ms, success 80-95%%)",
                            stage->agents, messages, tasks, burst ? "all at once" : "in waves",
                            spawn_p95, result->p95_us, task_p95,
                            success, (gdouble) peak_rss / (1024.0 * 1024.0));
  }

out:
  g_clear_pointer (&host, ah_host_free);
  bench_collector_clear (&collector);
  return result;
}

static gboolean
bench_run_stage3 (const BenchOptions *options,
                  GPtrArray          *results,
                  GError            **error)
{
  /* Paced first, then the same counts all at once. */
  for (guint burst = 0; burst < 2; burst++)
    for (gsize i = 0; i < G_N_ELEMENTS (bench_stage3_cases); i++)
      {
        BenchResult *result = bench_run_stage3_case (options, &bench_stage3_cases[i], burst,
                                                     error);

        if (result == NULL)
          return FALSE;
        g_ptr_array_add (results, result);
      }
  return TRUE;
}

static gboolean
bench_run_scenario (const char         *name,
                    const BenchOptions *options,
                    GPtrArray          *results,
                    GError            **error)
{
  guint64 messages = (guint64) options->messages;
  BenchResult *result = NULL;

  if (g_str_equal (name, "throughput"))
    result = bench_run_flow (options, "throughput", 1, BENCH_POOL, FALSE, messages, error);
  else if (g_str_equal (name, "fanout"))
    /* --messages counts handler deliveries, so each of the 100 gets a
     * hundredth of them. */
    result = bench_run_flow (options, "fanout", 1, BENCH_POOL, TRUE,
                             MAX (messages / BENCH_POOL, 1), error);
  else if (g_str_equal (name, "fanin"))
    result = bench_run_flow (options, "fanin", BENCH_POOL, 1, FALSE,
                             MAX (messages / BENCH_POOL, 1), error);
  else if (g_str_equal (name, "rtt"))
    return bench_run_rtt (options, results, error);
  else if (g_str_equal (name, "spawn"))
    return bench_run_spawn (options, results, error);
  else if (g_str_equal (name, "stage3"))
    return bench_run_stage3 (options, results, error);

  if (result == NULL)
    return FALSE;
  g_ptr_array_add (results, result);
  return TRUE;
}

static void
bench_print_results (GPtrArray          *results,
                     const BenchOptions *options,
                     const char         *pin_note)
{
  if (options->json)
    {
      g_print ("[\n");
      for (guint i = 0; i < results->len; i++)
        {
          BenchResult *r = results->pdata[i];

          g_print ("{\"scenario\": \"%s\", \"messages\": %" G_GUINT64_FORMAT
                   ", \"seconds\": %.6f, \"msgs_per_sec\": %.0f, \"p50_us\": %.3f"
                   ", \"p95_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f"
                   ", \"lost\": %" G_GUINT64_FORMAT ", \"pin\": \"%s\"%s}%s\n",
                   r->scenario, r->messages, r->seconds,
                   r->seconds > 0 ? (gdouble) r->messages / r->seconds : 0.0,
                   r->p50_us, r->p95_us, r->p99_us, r->p999_us, r->lost, pin_note,
                   r->extra_json->str, i + 1 < results->len ? "," : "");
        }
      g_print ("]\n");
      return;
    }

  g_print ("%-38s %12s %9s %14s %10s %10s %10s %6s  %s\n", "scenario", "messages", "seconds",
           "msgs/s", "p50 us", "p99 us", "p99.9 us", "lost", "notes");
  for (guint i = 0; i < results->len; i++)
    {
      BenchResult *r = results->pdata[i];

      g_print ("%-38s %12" G_GUINT64_FORMAT " %9.3f %14.0f %10.2f %10.2f %10.2f %6"
               G_GUINT64_FORMAT "  %s\n",
               r->scenario, r->messages, r->seconds,
               r->seconds > 0 ? (gdouble) r->messages / r->seconds : 0.0,
               r->p50_us, r->p99_us, r->p999_us, r->lost, r->extra_text->str);
    }
  g_print ("CPU pinning: %s\n", pin_note);
}

static const char * const bench_scenarios[] = {
  "throughput", "fanout", "fanin", "rtt", "spawn", "stage3",
};

static int
command_bench (const Command *command,
               GStrv         *args)
{
  BenchOptions options = {
    .workers = 0,
    .batch = 256,
    .payload = 64,
    .messages = 100000000,
    .sustained_seconds = 2.0,
    .spawn_agents = 100000,
  };
  const GOptionEntry entries[] = {
    { "workers", 0, 0, G_OPTION_ARG_INT, &options.workers,
      "Bus worker threads (default 0: one per CPU)", "N" },
    { "pin", 0, 0, G_OPTION_ARG_NONE, &options.pin,
      "Pin each bus worker to a CPU of its own (bus.pin_workers)", NULL },
    { "batch", 0, 0, G_OPTION_ARG_INT, &options.batch,
      "Messages a publisher sends per handler call, and the bus's publish batch (default 256)", "N" },
    { "payload", 0, 0, G_OPTION_ARG_INT, &options.payload,
      "Bytes per message (default 64, at least 24)", "BYTES" },
    { "messages", 0, 0, G_OPTION_ARG_INT64, &options.messages,
      "Messages per flow scenario (default 100000000)", "N" },
    { "sustained-seconds", 0, 0, G_OPTION_ARG_DOUBLE, &options.sustained_seconds,
      "How long stage3's sustained-load scenario keeps its mixed load going (default 2)", "S" },
    { "spawn-agents", 0, 0, G_OPTION_ARG_INT, &options.spawn_agents,
      "spawn's size: the large pre-warm is 4 x N, the batches N/10 and N, the waves 10 x N/10, "
      "the idle agents held 10 x N (default 100000; the spawn/terminate cycle uses at most "
      "10000, the restarts at most 1000)", "N" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &options.json,
      "Print one JSON array, one object per scenario, instead of the table", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GPtrArray) results = g_ptr_array_new_with_free_func ((GDestroyNotify) bench_result_free);
  g_autoptr(GPtrArray) names = g_ptr_array_new ();
  const char *pin_note;
  guint64 lost = 0;
  int status;

  if (!command_parse_options (command, entries, args, &status))
    return status;
  /* The bus says so itself when it cannot pin (more workers than CPUs). */
  pin_note = options.pin ? "on" : "off";
  if (options.workers < 0 || options.workers > 256)
    {
      print_usage_error (command->name, "--workers must be between 0 and 256");
      return AGENTHOST_EXIT_USAGE;
    }
  if (options.batch < 1 || options.batch > 65536)
    {
      print_usage_error (command->name, "--batch must be between 1 and 65536");
      return AGENTHOST_EXIT_USAGE;
    }
  if (options.payload < BENCH_MIN_PAYLOAD || options.payload > 65536)
    {
      g_autofree char *message = g_strdup_printf ("--payload must be between %d and 65536",
                                                  (int) BENCH_MIN_PAYLOAD);

      print_usage_error (command->name, message);
      return AGENTHOST_EXIT_USAGE;
    }
  if (options.messages < 1 || options.messages > G_GINT64_CONSTANT (1000000000000))
    {
      print_usage_error (command->name, "--messages must be between 1 and 1000000000000");
      return AGENTHOST_EXIT_USAGE;
    }
  if (options.spawn_agents < 1 || options.spawn_agents > 1000000)
    {
      print_usage_error (command->name, "--spawn-agents must be between 1 and 1000000");
      return AGENTHOST_EXIT_USAGE;
    }
  if (!(options.sustained_seconds >= 0.0 && options.sustained_seconds <= 86400.0))
    {
      print_usage_error (command->name, "--sustained-seconds must be between 0 and 86400");
      return AGENTHOST_EXIT_USAGE;
    }

  for (guint i = 1; (*args)[i] != NULL; i++)
    {
      gboolean known = FALSE;

      for (gsize s = 0; s < G_N_ELEMENTS (bench_scenarios); s++)
        known = known || g_str_equal ((*args)[i], bench_scenarios[s]);
      if (!known)
        {
          g_autofree char *message = g_strdup_printf ("unknown scenario '%s' (throughput, fanout, "
                                                      "fanin, rtt, spawn, stage3)", (*args)[i]);

          print_usage_error (command->name, message);
          return AGENTHOST_EXIT_USAGE;
        }
      g_ptr_array_add (names, (*args)[i]);
    }
  if (names->len == 0)
    for (gsize s = 0; s < G_N_ELEMENTS (bench_scenarios); s++)
      g_ptr_array_add (names, (gpointer) bench_scenarios[s]);

  for (guint i = 0; i < names->len; i++)
    {
      g_autoptr(GError) error = NULL;

      if (!bench_run_scenario (names->pdata[i], &options, results, &error))
        {
          /* What was measured before still counts. */
          bench_print_results (results, &options, pin_note);
          g_printerr ("%s: bench %s: %s\n", g_get_prgname (), (const char *) names->pdata[i],
                      error != NULL ? error->message : "failed");
          return error != NULL ? exit_status_for_error (error) : AGENTHOST_EXIT_RUN_FAILED;
        }
    }

  bench_print_results (results, &options, pin_note);
  for (guint i = 0; i < results->len; i++)
    lost += ((BenchResult *) results->pdata[i])->lost;
  if (lost > 0)
    {
      g_printerr ("%s: bench: %" G_GUINT64_FORMAT " messages lost, duplicated or reordered\n",
                  g_get_prgname (), lost);
      return AGENTHOST_EXIT_RUN_FAILED;
    }
  return AGENTHOST_EXIT_OK;
}

int
main (int argc, char **argv)
{
  const Command *command;
  g_auto(GStrv) args = NULL;

  setlocale (LC_ALL, "");
  /* Numbers in the summaries (text and JSON) are printed with printf:
   * a locale with a decimal comma would make the JSON invalid. */
  setlocale (LC_NUMERIC, "C");
  g_set_prgname ("agenthost");
  /* stdout carries the summaries (and JSON with --json -); every log
   * message, debug included, belongs on stderr. */
  g_log_writer_default_set_use_stderr (TRUE);

  if (argc < 2)
    {
      g_printerr ("Usage: %s COMMAND [OPTION...] [ARGUMENT...]\n", g_get_prgname ());
      g_printerr ("Try '%s --help' for the list of commands.\n", g_get_prgname ());
      return AGENTHOST_EXIT_USAGE;
    }

  if (g_str_equal (argv[1], "--version") || g_str_equal (argv[1], "-h")
      || g_str_equal (argv[1], "--help"))
    {
      if (argc > 2)
        {
          g_autofree char *message = g_strdup_printf ("%s takes no argument", argv[1]);

          print_usage_error (NULL, message);
          return AGENTHOST_EXIT_USAGE;
        }
      if (g_str_equal (argv[1], "--version"))
        g_print ("%s %s (plugin ABI %d.%d)\n", g_get_prgname (), AH_VERSION_STRING,
                 AH_PLUGIN_ABI_MAJOR, AH_PLUGIN_ABI_MINOR);
      else
        print_main_help ();
      return AGENTHOST_EXIT_OK;
    }

  if (argv[1][0] == '-')
    {
      g_autofree char *message = g_strdup_printf ("unknown option '%s' (options go after the command)",
                                                  argv[1]);

      print_usage_error (NULL, message);
      return AGENTHOST_EXIT_USAGE;
    }

  command = find_command (argv[1]);
  if (command == NULL)
    return report_unknown_command (argv[1]);

  args = g_strdupv (argv + 1);
  return command->func (command, &args);
}
