/* embed: hosting agents from your own program, without the CLI.
 *
 *   embed MANIFEST SUBJECT TEXT
 *
 * Starts the manifest's system, makes one request on SUBJECT with TEXT,
 * prints the reply and the run's summary.
 *
 * SPDX-License-Identifier: MIT
 */
#include <agenthost/agenthost.h>
#include <stdio.h>
#include <string.h>

int
main (int argc, char **argv)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GBytes) reply = NULL;
  g_autofree char *summary = NULL;
  AhManifest *manifest;

  if (argc != 4)
    {
      fprintf (stderr, "usage: %s MANIFEST SUBJECT TEXT\n", argv[0]);
      return 2;
    }

  manifest = ah_manifest_load (argv[1], &error);
  if (manifest == NULL)
    {
      fprintf (stderr, "%s\n", error->message);
      return 3;
    }
  host = ah_host_new (manifest, &error);   /* takes the manifest */
  if (host == NULL || !ah_host_start (host, &error))
    {
      fprintf (stderr, "%s\n", error->message);
      return 1;
    }

  reply = ah_host_request (host, argv[2], argv[3], strlen (argv[3]), 1000, &error);
  if (reply == NULL)
    {
      fprintf (stderr, "request failed: %s\n", error->message);
      return 1;
    }
  printf ("reply: %.*s\n", (int) g_bytes_get_size (reply), (const char *) g_bytes_get_data (reply, NULL));

  ah_host_request_stop (host, 0);
  ah_host_run (host);
  summary = ah_host_format_summary (host);
  fputs (summary, stdout);
  return 0;
}
