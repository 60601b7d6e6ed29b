"""Every limit llmos enforces, named in one place; hitting one always yields a clear error."""

from __future__ import annotations

MAX_READ_BYTES = 256 * 1024
"""fs.read returns at most this many bytes per call and says when it truncated."""

MAX_WRITE_BYTES = 16 * 1024 * 1024
"""fs.write refuses content larger than this (E_TOOBIG)."""

MAX_LIST_ENTRIES = 2000
"""fs.list stops after this many entries and marks the listing truncated."""

MAX_SEARCH_HITS = 200
"""fs.search returns at most this many matching lines (max_hits may ask for up to this)."""

SEARCH_HITS = 20
"""fs.search returns this many of its best lines unless max_hits asks for another number."""

MAX_SEARCH_FILES = 10
"""fs.search's per-file counts name at most this many files, best first (files_matched says
how many matched in all), so the counts never crowd the best lines out of the kernel's view."""

MAX_SEARCH_LINE_CHARS = 200
"""A line fs.search returns is cut to this many characters, around its first match."""

MAX_SEARCH_FILE_BYTES = 4 * 1024 * 1024
"""fs.search skips files larger than this."""

MAX_COUNT_BYTES = 16 * 1024 * 1024
"""fs.stat and fs.append count the lines of a text file up to this size; past it, no count."""

MAX_SYMLINK_HOPS = 40
"""Symlinks followed while resolving one workspace path (Linux's own limit)."""

MAX_IMAGE_PIXELS = 64_000_000
"""Images with more pixels are refused as decompression bombs (E_TOOBIG)."""

MAX_IMAGE_FILE_BYTES = 64 * 1024 * 1024
"""Image files larger than this are refused before decoding (E_TOOBIG)."""

MAX_IMAGE_SIDE = 16384
"""Largest width or height an image operation may produce."""

AUDIT_INLINE_CHARS = 256
"""Argument strings longer than this are stored in the audit log as a digest, not verbatim."""

MAX_STEPS_PER_TURN = 8
"""The kernel's step loop stops a turn after this many syscalls."""

MAX_RESULT_CHARS = 2000
"""A syscall result shown to the kernel is cut to this many characters (and says so)."""

MAX_MEM_TEXT_CHARS = 8000
"""mem.store refuses a text longer than this (E_TOOBIG): a memory is a fact, not a document."""

MAX_MEM_TAGS = 8
"""A memory carries at most this many tags."""

MAX_MEM_SEARCH_K = 50
"""mem.search returns at most this many hits."""

MAX_MEM_FORGET = 50
"""mem.forget by query forgets at most this many memories at once."""

MEM_FORGET_MIN_SCORE = 0.35
"""mem.forget by query takes only memories at least this similar (cosine) to the query."""

MEM_PROBE_TIMEOUT_S = 60.0
"""The index health probe (a subprocess) counts as failed when it runs longer than this."""

CONTEXT_HIGH = 0.8
"""The pager swaps the oldest turns out once the conversation fills this share of the room the
system prompt leaves in the context (less the room kept for the kernel's output)."""

CONTEXT_LOW = 0.5
"""...and stops once the conversation is back under this share."""

RECALL_TOKENS = 320
"""Pages recalled before a step take at most this many prompt tokens."""

RECALL_K = 4
"""At most this many pages are recalled before a step."""

RECALL_MIN_SCORE = 0.3
"""A page is recalled only when at least this similar (cosine) to the request."""

SUMMARY_TOKENS = 160
"""The running summary of paged-out turns is kept to this many tokens."""

SUMMARY_MAX_SECONDS = 4.0
"""The model writes the summary only when its measured speed says it will take no longer than
this; otherwise the summary is extracted (one line per turn), which takes no model time."""

TOOL_TIMEOUT_S = 30.0
"""An app's tool runs at most this long unless it declares its own time-out (E_TIMEOUT; the
command's whole process group is killed)."""

MAX_TOOL_TIMEOUT_S = 600.0
"""The longest time-out a tool may declare."""

TOOL_OUTPUT_BYTES = 64 * 1024
"""A tool's output (stdout and stderr together) is cut at this many bytes unless it declares
its own cap; a command that writes more is stopped, and the result says the output was cut."""

MAX_TOOL_OUTPUT_BYTES = 1024 * 1024
"""The largest output cap a tool may declare."""

SCHED_KV_BYTES = 512 * 1024 * 1024
"""The scheduler keeps processes' saved KV states (for fast context switches) within this many
bytes, dropping the least recently saved first; a process whose state was dropped is prefilled
again at its next switch."""

SCHED_STEP_TOKENS = 128
"""With batching, one step evaluates at most this many tokens (every decoding process's next
tokens first, then chunks of prompts), so a process decoding beside a long prefill gets a
token every step of about a second on a 2-core CPU, and a new request joins within one.
Measured with the default model after a 2k-token system prompt: 86 tok/s prefilled in chunks of
128, 90 in chunks of 512 (a 5.7 s step)."""

SCHED_SLOTS = 4
"""With llama.cpp the scheduler decodes up to this many processes' completions in one batch
(continuous batching), each on its own sequence of one KV cache sized this many contexts; more
processes than slots wait for one, and the least recently used idle sequence is reused."""

GROUND_SCAN_ENTRIES = 5000
"""Before each step the kernel looks at most this many workspace entries to ground paths."""

GROUND_MAX_PATHS = 200
"""At most this many real paths (those nearest the request's words) are offered to the grammar
for an argument that must name an existing file or folder; a bigger grammar slows decoding."""

VIEW_MAX_ENTRIES = 40
"""The workspace view shown with a request lists at most this many files and folders..."""

VIEW_MAX_CHARS = 600
"""...in at most this many characters."""

FILE_INDEX_MAX_FILES = 5000
"""Search by meaning over a workspace's files looks at most this many files (its walk stops
there, and the result says it was cut short)."""

FILE_INDEX_MAX_FILE_BYTES = 1024 * 1024
"""...skips files larger than this (a log or a data dump past it is left to fs.search)."""

FILE_INDEX_MAX_CHUNKS = 20_000
"""...keeps at most this many chunks of text (up to 8 lines each) per workspace; files past it
are left out, and the result says so. Embedding is the cost: a 2,500-line log (319 chunks) took
25 s on 2 busy CPU cores, about 80 ms a chunk, so a full index is a background job's work."""

FILE_INDEX_MAX_DEPTH = 32
"""...does not descend into folders nested deeper than this."""

FILE_SEARCH_BUILD_SECONDS = 20.0
"""A search by meaning spends about this long at most (re)indexing changed files, then answers
from what is indexed; the result says how many files wait, and the next search goes on with
them. Embedding stops at the first batch (64 chunks, a few seconds) past it; a file cut short
keeps the vectors made so far for the next search."""

FILE_SEARCH_MAX_K = 50
"""A search by meaning returns at most this many hits..."""

FILE_SEARCH_HIT_CHARS = 600
"""...each hit's text cut to this many characters."""

MAX_IMAGE_BATCH = 200
"""An image call over a folder or pattern takes at most this many files (E_TOOBIG beyond)."""

MAX_CALC_CHARS = 200
"""calc refuses a longer expression (E_TOOBIG)."""

MAX_CALC_DIGITS = 100
"""calc refuses a number with more digits than this, checked before a power is computed, so
`9**9**9` fails at once (E_TOOBIG) instead of hanging."""

STAT_PREVIEW_CHARS = 240
"""fs.stat shows a text file's start: all of it up to this many characters, else its whole lines
within them and "..." (asked about a file's content, the model answered from its size alone and
invented the rest)..."""

STAT_PREVIEW_MAX_BYTES = 64 * 1024
"""...and shows none for a file larger than this (a log or a data file is for fs.read)."""

SEARCH_MEANING_SECONDS = 3.0
"""When no line holds all of an fs.search's words and the process can reach the workspace's
search by meaning, that search first indexes changed files for about this long (its first
batch of chunks always: a few seconds more on 2 cores), then answers from what is indexed..."""

SEARCH_MEANING_HITS = 3
"""...adding at most this many passages to the word hits..."""

SEARCH_MEANING_MIN_SIMILARITY = 0.15
"""...only those at least this similar (cosine) to the query: "which database does the app
use?" met its config's `[db] engine = "postgres"` at 0.19, unrelated passages stayed under 0.1
(measured with all-MiniLM-L6-v2)..."""

SEARCH_MEANING_HIT_CHARS = 300
"""...each cut to this many characters."""

EXAMPLE_COUNT = 3
"""The kernel is shown at most this many examples nearest each request..."""

EXAMPLE_MIN_SCORE = 0.35
"""...and only those at least this similar (cosine of the requests' embeddings): measured on
the built-ins, unrelated requests ("run the sleep tool", "which train do I take?") score about
0.25 against their nearest, related ones 0.5-0.66; an unrelated example taught the 0.5B model
to refuse a tool it had."""

EXAMPLE_TOKENS = 160
"""...in at most this many prompt tokens (prefilled once per turn; dropped when it ends)."""

TOOL_MIN_SCORE = 0.35
"""An app's or tool's syscall is named with a request (as made for it) when its description is
at least this similar to the request: measured with all-MiniLM-L6-v2 on function-calling
tools, fitting requests score 0.36-0.55 ("add 3, 4 and 5" / "Add a list of numbers" 0.54),
unrelated ones 0.03-0.29 ("what time is it in Tokyo?" / a weather forecast 0.03)."""

LESSONS_MAX = 1000
"""Lessons (taught, kept, marked bad) the person's store holds; past it the least used go."""

LESSON_BONUS = 0.15
"""How much more like a request the person's own examples (taught, kept) count than the
built-ins, so a correction wins over the example that taught the mistake..."""

LEARNED_BONUS = 0.05
"""What a turn learned without being told (it went right and was not undone or corrected)
adds: above the built-ins, below what the person taught or kept."""

LEARNED_MAX_CHARS = 600
"""A turn is learned only when its request and calls, as JSON, fit in this many characters:
an example is a pattern to follow, and a long one would take the whole example budget."""

LESSON_MIN_SCORE = 0.45
"""...when at least this similar to the request (cosine, before the bonus): above the
built-ins' floor (EXAMPLE_MIN_SCORE), since a lesson shown for an unrelated request teaches
its calls where they do not belong."""

LESSON_EFFECT_SCORE = 0.6
"""A lesson lets a request cause its calls' effects (taught that "ditch x" deletes) only when
at least this similar, or said the same way (LESSON_FRAME_SCORE): measured on the learned
suite, paraphrases of a lesson scored 0.46-0.88 and unrelated requests up to 0.53 ("tuck
notes.txt away in old/" against "create an empty file called notes.md"), so showing a lesson
(LESSON_MIN_SCORE) asks less than letting it widen what a request may do."""

LESSON_FRAME_SCORE = 0.6
"""How like a request a lesson counts when both open the same way ("never forget: ...",
"chuck PATH in the bin": see examples.frame_score), whatever their content."""

EXAMPLE_QUESTION_MISMATCH = 0.2
"""How much less like a request an example counts when one of them is a question and the other
is not: "my dog is called Rex" (tells a fact) is near "what is my dog called?" by meaning,
but its call is the statement's (mem.store), not the question's (mem.search)."""

DOCUMENT_MAX_BYTES = 64 * 1024 * 1024
"""A document (PDF, Office, OpenDocument, HTML, an image read for its text) larger than this
is refused unread (E_TOOBIG)."""

DOCUMENT_MAX_CHARS = 4_000_000
"""Characters of text kept from one document (about 2,000 dense pages); the rest is cut and
the result says so."""

DOCUMENT_OCR_PAGES = 20
"""Pages of one PDF read by OCR when they have no text layer: OCR costs about a second and a
half a page on 2 cores, so a 300-page scan is not a half-hour read; the rest say they were
not read."""

DOCUMENT_MAX_UNZIPPED = 256 * 1024 * 1024
"""An Office or OpenDocument file whose parts declare more than this unpacked is refused before
any part is inflated: a decompression bomb costs nothing."""

DOCUMENT_MAX_PARTS = 20_000
"""Parts (zip entries) an Office or OpenDocument file may hold."""

DOCUMENT_TIMEOUT_S = 120.0
"""Wall-clock seconds one conversion may take in its sandbox (20 OCR'd pages fit) before it is
killed (E_TIMEOUT)."""

DOCUMENT_MEMORY_BYTES = 3 * 1024**3
"""Address space of the converter (RLIMIT_AS): a malicious file exhausts its process, not the
machine."""

SEARCH_DOCUMENT_SECONDS = 10.0
"""fs.search converts documents and images it has not read before for at most this long (their
text is cached, so the next search reads them in milliseconds); the rest are counted as unread."""

DOCUMENT_CACHE_BYTES = 256 * 1024 * 1024
"""The text cache of documents (LLMOS_HOME/documents) is kept under this size, the entries
written longest ago dropped first."""

MAX_RULE_CHARS = 300
"""Longest prompt rule a plugin may add (`Registrar.rule`): each costs its tokens on every
request that shows the apps' calls."""

SCHED_AGING_S = 10.0
"""A background process's request (a job's, an app's) that has waited this long is served like
a person's: the foreground goes first, but never starves the rest."""
