/* SPDX-License-Identifier: MIT */
/* coordinator: holds the corpus, hands out its chunks.
 *
 * Every agent of the pool loads the same corpus and splits it the same
 * way at init, so any of them can answer corpus.chunk requests (queue
 * delivery spreads them). Only one gets $SYS.host.started (queue
 * delivery again) and publishes the chunks on tasks.count.
 *
 * Config: `corpus_file` (a text file; default: the built-in text below),
 * `repeat` (how many copies of the text make the corpus; default 20 for
 * the built-in text, 1 for a file), `chunks` (default 40).
 */
#include <agenthost/agenthost.h>

#include "../wordcount/wordcount-text.h"

#include <glib/gstdio.h>

#define COORDINATOR_SUBJECT_STARTED "$SYS.host.started"
#define COORDINATOR_SUBJECT_TASKS   "tasks.count"
#define COORDINATOR_SUBJECT_CHUNK   "corpus.chunk"
/* Five agents each hold a copy: keep the whole corpus modest. */
#define COORDINATOR_MAX_CORPUS      (64 * 1024 * 1024)
#define COORDINATOR_MAX_REPEAT      100000

/* Written for this project (MIT, like the rest of it): plain English
 * prose with the usual mix of short and long words, apostrophes and
 * punctuation, so the counts have a realistic long tail. */
static const char coordinator_builtin_text[] =
  "The lighthouse on the northern point had been dark for eleven years when "
  "Margaret Hale came to the village with a trunk of books and a letter from "
  "the harbour board. The letter said that the light was to burn again, and "
  "that she was to keep it. Nobody in the village believed that a woman who "
  "had spent her life in a city office could keep a light through a winter on "
  "that coast, and several of them said so, kindly enough, at the inn on the "
  "first evening.\n\n"
  "She did not argue with them. She asked instead about the tides, and the "
  "names of the rocks, and which of the boats went out before dawn, and she "
  "wrote the answers in a small green notebook that she kept in the pocket of "
  "her coat. When the innkeeper's son offered to carry her trunk up the cliff "
  "path she thanked him and said that she would carry it herself, a few books "
  "at a time, because she wanted to learn the path in every kind of weather "
  "before the weather began to matter.\n\n"
  "The tower was in a worse state than the letter had promised. The glass of "
  "the lantern was whole, but the brass was green, the stairs were soft with "
  "damp, and a family of gulls had raised three generations in the watch room. "
  "She spent the first week with a bucket, a brush and a tin of oil, and the "
  "second week with the great lamp itself, taking it apart on a sheet of canvas "
  "and laying out every screw and spring in the order it had come away. She "
  "drew each piece in the notebook before she cleaned it. It was slow work, and "
  "she liked it better than anything she had done in the city.\n\n"
  "On the ninth night she lit the lamp for the first time. It caught, and "
  "smoked, and steadied, and then the lens began to turn, and a long white beam "
  "went out across the water and came back, and went out again. From the window "
  "of the inn the fishermen watched it sweep over the harbour, and one of them "
  "said that it looked the same as it always had, and another said that it did "
  "not, that it was brighter, and they argued about it until the fire burned "
  "low. Nobody said again that she would not last the winter.\n\n"
  "The winter, when it came, was the hardest anyone could remember. The wind "
  "blew from the north for nineteen days without stopping, and the sea came "
  "over the rocks and up the cliff in sheets of grey spray that froze where it "
  "fell. Twice the path to the village was closed by ice, and twice she went "
  "down it anyway, on her hands and knees, to fetch oil. On the worst night of "
  "all a coaster called the Mary Ellen lost her rudder off the point and drifted "
  "toward the reef, and the crew saw the light and knew at last where they "
  "were, and dropped both anchors in time. In the morning the captain climbed "
  "the tower to thank her, and found her asleep in the chair beside the lamp, "
  "with the notebook open on her knee and the pencil still in her hand.\n\n"
  "In the spring the harbour board sent an inspector. He was a careful man who "
  "had expected to find a careless keeper, and he went over the tower from the "
  "cellar to the weather vane with a lantern and a list. He found the brass "
  "bright, the stairs mended, the log written up to the hour, and the gulls "
  "rehoused, at some expense of patience, on a ledge below the gallery. He "
  "wrote in his report that the light was the best kept on that part of the "
  "coast, and then, because he was an honest man, he crossed out the word "
  "coast and wrote country instead.\n\n"
  "Margaret kept the light for thirty-one years. When she was too old to climb "
  "the stairs she trained the innkeeper's granddaughter to do it, and gave her "
  "the green notebook, which had become by then a set of nine notebooks, tied "
  "together with tarred string. The first page of the first one said only: "
  "learn the path in every kind of weather. The girl read it, and laughed, and "
  "went out into the rain to do exactly that.\n";

typedef struct {
  char  *corpus;        /* the text, @repeat times over */
  gsize  corpus_len;
  guint  n_chunks;
  gsize *bounds;        /* n_chunks + 1 offsets into @corpus */
  gboolean published;   /* the chunks went out (once per run) */
} CoordinatorState;

static gboolean
coordinator_load_corpus (AhContext        *ctx,
                         CoordinatorState *self,
                         GError          **error)
{
  const char *corpus_file = ah_config_get_string (ctx, "corpus_file", NULL);
  g_autofree char *file_text = NULL;
  const char *text = coordinator_builtin_text;
  gsize text_len = sizeof (coordinator_builtin_text) - 1;
  guint repeat;
  GString *corpus;

  if (corpus_file != NULL)
    {
      g_autoptr(GError) local_error = NULL;
      GStatBuf info;

      /* Checked before reading: the file is read whole, five times. */
      if (g_stat (corpus_file, &info) == 0 && info.st_size > COORDINATOR_MAX_CORPUS)
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                       "config 'corpus_file': %s is larger than %d bytes",
                       corpus_file, COORDINATOR_MAX_CORPUS);
          return FALSE;
        }
      if (!g_file_get_contents (corpus_file, &file_text, &text_len, &local_error))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                       "config 'corpus_file': %s", local_error->message);
          return FALSE;
        }
      text = file_text;
    }

  if (!wc_config_get_uint (ctx, "repeat", corpus_file != NULL ? 1 : 20,
                           1, COORDINATOR_MAX_REPEAT, &repeat, error))
    return FALSE;
  if (text_len > COORDINATOR_MAX_CORPUS / repeat)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "config 'repeat': %u copies of a %" G_GSIZE_FORMAT "-byte text "
                   "exceed the %d-byte corpus limit", repeat, text_len, COORDINATOR_MAX_CORPUS);
      return FALSE;
    }

  corpus = g_string_sized_new (text_len * repeat + 1);
  for (guint i = 0; i < repeat; i++)
    {
      g_string_append_len (corpus, text, (gssize) text_len);
      /* Copies of a file without a final newline would otherwise glue
       * its last word to its first. */
      if (text_len > 0 && !g_ascii_isspace (text[text_len - 1]) && i + 1 < repeat)
        g_string_append_c (corpus, '\n');
    }
  self->corpus_len = corpus->len;
  self->corpus = g_string_free (corpus, FALSE);

  return TRUE;
}

static gboolean
coordinator_agent_init (AhContext *ctx,
                        gpointer   state,
                        GError   **error)
{
  CoordinatorState *self = state;

  if (!wc_config_get_uint (ctx, "chunks", 40, 1, WC_MAX_CHUNKS, &self->n_chunks, error))
    return FALSE;
  if (!coordinator_load_corpus (ctx, self, error))
    return FALSE;

  self->bounds = g_new (gsize, self->n_chunks + 1);
  wc_split_chunks (self->corpus, self->corpus_len, self->n_chunks, self->bounds);

  return TRUE;
}

static void
coordinator_agent_finalize (AhContext *ctx,
                            gpointer   state)
{
  CoordinatorState *self = state;

  g_clear_pointer (&self->corpus, g_free);
  g_clear_pointer (&self->bounds, g_free);
}

static gboolean
coordinator_publish_chunks (AhContext        *ctx,
                            CoordinatorState *self,
                            GError          **error)
{
  g_autoptr(GString) payload = g_string_new (NULL);

  /* One run, one corpus: a second start signal would double every count. */
  if (self->published)
    return TRUE;
  self->published = TRUE;

  for (guint i = 0; i < self->n_chunks; i++)
    {
      g_string_printf (payload, "chunk %u %u\n", i, self->n_chunks);
      g_string_append_len (payload, self->corpus + self->bounds[i],
                           (gssize) (self->bounds[i + 1] - self->bounds[i]));
      if (!ah_publish (ctx, COORDINATOR_SUBJECT_TASKS, payload->str, payload->len))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "the bus refused chunk %u of %u on " COORDINATOR_SUBJECT_TASKS,
                       i, self->n_chunks);
          return FALSE;
        }
    }

  return TRUE;
}

static gboolean
coordinator_answer_chunk (AhContext        *ctx,
                          CoordinatorState *self,
                          const AhMessage  *request,
                          GError          **error)
{
  const char *data;
  gsize size;
  guint64 id;

  if (ah_message_get_kind (request) != AH_MESSAGE_REQUEST)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   COORDINATOR_SUBJECT_CHUNK " takes requests only");
      return FALSE;
    }

  data = ah_message_get_data (request, &size);
  if (!wc_parse_decimal (data, size, G_MAXUINT64, &id) || id >= self->n_chunks)
    {
      g_autofree char *snippet = wc_snippet (data, size);

      /* No reply: the requester gets its TIMEOUT and reports the chunk. */
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   COORDINATOR_SUBJECT_CHUNK " request: expected a chunk id "
                   "between 0 and %u, got %s", self->n_chunks - 1, snippet);
      return FALSE;
    }

  if (!ah_reply (ctx, request, self->corpus + self->bounds[id],
                 self->bounds[id + 1] - self->bounds[id]))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "the bus refused the reply for chunk %" G_GUINT64_FORMAT, id);
      return FALSE;
    }

  return TRUE;
}

static gboolean
coordinator_handle_batch (AhContext              *ctx,
                          gpointer                state,
                          const AhMessage * const *messages,
                          guint                   n_messages,
                          GError                **error)
{
  CoordinatorState *self = state;
  GError *first_error = NULL;

  for (guint i = 0; i < n_messages; i++)
    {
      const char *subject = ah_message_get_subject (messages[i]);
      GError *local_error = NULL;
      gboolean ok;

      if (g_str_equal (subject, COORDINATOR_SUBJECT_STARTED))
        ok = coordinator_publish_chunks (ctx, self, &local_error);
      else if (g_str_equal (subject, COORDINATOR_SUBJECT_CHUNK))
        ok = coordinator_answer_chunk (ctx, self, messages[i], &local_error);
      else
        {
          ok = FALSE;
          g_set_error (&local_error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "unexpected subject '%s' (coordinator takes "
                       COORDINATOR_SUBJECT_STARTED " and " COORDINATOR_SUBJECT_CHUNK ")",
                       subject);
        }
      if (!ok)
        wc_keep_first_error (&first_error, local_error);
    }

  if (first_error != NULL)
    {
      g_propagate_error (error, first_error);
      return FALSE;
    }
  return TRUE;
}

/* The defaults and ranges agent_init applies, so that validate reports a
 * bad value before any agent starts. `repeat` has no default here: it
 * depends on `corpus_file`, and agent_init picks it. Whether the file
 * can be read, and the corpus size, agent_init checks too. */
static const AhConfigKey coordinator_config_schema[] = {
  { .name = "corpus_file", .type = AH_CONFIG_STRING,
    .description = "Text file to count instead of the built-in text" },
  { .name = "repeat", .type = AH_CONFIG_INT, .min = 1, .max = COORDINATOR_MAX_REPEAT,
    .description = "Copies of the text in the corpus (default 20, or 1 with corpus_file)" },
  { .name = "chunks", .type = AH_CONFIG_INT, .default_value = "40", .min = 1, .max = WC_MAX_CHUNKS,
    .description = "Pieces the corpus is split into, at whitespace" },
  AH_CONFIG_KEY_END
};

AH_PLUGIN_DEFINE (coordinator,
  .version        = "1.0.0",
  .description    = "Splits the corpus into chunks, publishes them and serves them on request",
  .state_size     = sizeof (CoordinatorState),
  .agent_init     = coordinator_agent_init,
  .agent_finalize = coordinator_agent_finalize,
  .handle_batch   = coordinator_handle_batch,
  .config_schema  = coordinator_config_schema)
