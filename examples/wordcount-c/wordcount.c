// wordcount in C: the job of examples/README.md against the bindings wit-bindgen
// generates from wit/job.wit (plugin.h). Build: ./build.sh <out-dir>.
//
// Ownership follows the canonical ABI as the bindings spell it: strings passed in
// (`params`, `failure`, the context) belong to us and are freed here; strings we
// return must be malloc'd, the bindings free them after the host has copied them.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

#define MAX_REPEAT 1000000000ULL

// ---- a minimal JSON reader: enough to find two top-level keys ----------------

typedef struct {
  const uint8_t *p, *end;
} cursor_t;

static void skip_ws(cursor_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

// Reads a JSON string at the cursor. With `words`, counts its words: maximal runs
// of characters other than space, tab, CR and LF, after unescaping.
static bool read_string(cursor_t *c, const uint8_t **start, size_t *len, uint64_t *words) {
  if (c->p >= c->end || *c->p != '"') return false;
  c->p++;
  *start = c->p;
  bool in_word = false;
  while (c->p < c->end && *c->p != '"') {
    bool space = false;
    if (*c->p == '\\') {
      c->p++;
      if (c->p >= c->end) return false;
      space = *c->p == 'n' || *c->p == 't' || *c->p == 'r';
      if (*c->p == 'u') {
        if (c->end - c->p < 5) return false;
        space = memcmp(c->p + 1, "0020", 4) == 0 || memcmp(c->p + 1, "0009", 4) == 0 ||
                memcmp(c->p + 1, "000a", 4) == 0 || memcmp(c->p + 1, "000d", 4) == 0 ||
                memcmp(c->p + 1, "000A", 4) == 0 || memcmp(c->p + 1, "000D", 4) == 0;
        c->p += 4;
      }
    } else {
      space = *c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r';
    }
    if (words && !space && !in_word) (*words)++;
    in_word = !space;
    c->p++;
  }
  if (c->p >= c->end) return false;
  *len = (size_t)(c->p - *start);
  c->p++;
  return true;
}

// Skips any JSON value (objects and arrays by bracket depth, strings exactly).
static bool skip_value(cursor_t *c) {
  skip_ws(c);
  int depth = 0;
  do {
    if (c->p >= c->end) return false;
    const uint8_t *s;
    size_t n;
    if (*c->p == '"') {
      if (!read_string(c, &s, &n, NULL)) return false;
    } else if (*c->p == '{' || *c->p == '[') {
      depth++, c->p++;
    } else if (*c->p == '}' || *c->p == ']') {
      if (depth == 0) break;  // the end of the enclosing object, not ours
      depth--, c->p++;
    } else if (depth == 0) {
      while (c->p < c->end && *c->p != ',' && *c->p != '}' && *c->p != ']' && *c->p != ' ') c->p++;
    } else {
      c->p++;
    }
    skip_ws(c);
  } while (depth > 0);
  return true;
}

typedef struct {
  bool has_text, text_is_string;
  uint64_t words;
  bool has_repeat;
  uint64_t repeat;  // 0 when not an integer in range
} params_t;

// Reads the parameters object; false when it is not a JSON object.
static bool parse_params(const plugin_string_t *json, params_t *out) {
  cursor_t c = {json->ptr, json->ptr + json->len};
  memset(out, 0, sizeof *out);
  out->repeat = 1;
  skip_ws(&c);
  if (c.p >= c.end || *c.p != '{') return false;
  c.p++;
  skip_ws(&c);
  if (c.p < c.end && *c.p == '}') return true;
  for (;;) {
    const uint8_t *key;
    size_t key_len;
    skip_ws(&c);
    if (!read_string(&c, &key, &key_len, NULL)) return false;
    skip_ws(&c);
    if (c.p >= c.end || *c.p != ':') return false;
    c.p++;
    skip_ws(&c);
    if (key_len == 4 && memcmp(key, "text", 4) == 0) {
      out->has_text = true;
      const uint8_t *s;
      size_t n;
      out->text_is_string = c.p < c.end && *c.p == '"';
      if (out->text_is_string) {
        if (!read_string(&c, &s, &n, &out->words)) return false;
      } else if (!skip_value(&c)) {
        return false;
      }
    } else if (key_len == 6 && memcmp(key, "repeat", 6) == 0) {
      out->has_repeat = true;
      uint64_t n = 0;
      const uint8_t *digits = c.p;
      while (c.p < c.end && *c.p >= '0' && *c.p <= '9' && n <= MAX_REPEAT) n = n * 10 + (*c.p++ - '0');
      bool integer = c.p > digits && (c.p == c.end || *c.p == ',' || *c.p == '}' || *c.p == ' ');
      bool null = c.end - digits >= 4 && memcmp(digits, "null", 4) == 0;
      out->repeat = null ? 1 : integer && n >= 1 && n <= MAX_REPEAT ? n : 0;
      if (!skip_value(&c)) return false;
    } else if (!skip_value(&c)) {
      return false;
    }
    skip_ws(&c);
    if (c.p < c.end && *c.p == ',') {
      c.p++;
      continue;
    }
    return c.p < c.end && *c.p == '}';
  }
}

// The first problem with the parameters, or NULL.
static const char *params_error(const params_t *p, bool parsed) {
  if (!parsed) return "parameters must be a JSON object";
  if (!p->has_text) return "missing parameter 'text'";
  if (!p->text_is_string) return "parameter 'text' must be a string";
  if (p->repeat == 0) return "parameter 'repeat' must be an integer from 1 to 1000000000";
  return NULL;
}

// ---- the job interface --------------------------------------------------------

void exports_wasmjobs_plugin_job_describe(exports_wasmjobs_plugin_job_job_info_t *ret) {
  plugin_string_dup(&ret->name, "wordcount-c");
  plugin_string_dup(&ret->description, "counts the words of `text`, `repeat` times (C)");
  ret->capacity.ptr = NULL;
  ret->capacity.len = 0;
  ret->backoff.initial_backoff_ms = 1000;
  ret->backoff.max_backoff_ms = 300000;
  ret->memory_mib = 0;
}

uint32_t exports_wasmjobs_plugin_job_max_fails(void) { return 0; }

bool exports_wasmjobs_plugin_job_should_retry(plugin_string_t *failure, uint32_t attempt) {
  (void)attempt;
  plugin_string_free(failure);
  return true;
}

bool exports_wasmjobs_plugin_job_validate(plugin_string_t *params, plugin_string_t *err) {
  params_t p;
  const char *problem = params_error(&p, parse_params(params, &p));
  plugin_string_free(params);
  if (problem) {
    plugin_string_dup(err, problem);
    return false;
  }
  return true;
}

static void checkin(const char *message) {
  plugin_string_t s = {(uint8_t *)message, strlen(message)};
  wasmjobs_plugin_host_checkin(&s);
}

bool exports_wasmjobs_plugin_job_run(exports_wasmjobs_plugin_job_job_context_t *ctx,
                                     plugin_string_t *params,
                                     exports_wasmjobs_plugin_job_run_error_t *err) {
  exports_wasmjobs_plugin_job_job_context_free(ctx);
  params_t p;
  const char *problem = params_error(&p, parse_params(params, &p));
  if (problem) {
    plugin_string_free(params);
    err->tag = WASMJOBS_PLUGIN_TYPES_RUN_ERROR_FAILED;
    plugin_string_dup(&err->val.failed, problem);
    return false;
  }
  uint64_t step = p.repeat / 10 > 0 ? p.repeat / 10 : 1;
  uint64_t words = 0;
  char line[64];
  for (uint64_t pass = 1; pass <= p.repeat; pass++) {
    switch (wasmjobs_plugin_host_op_command()) {
      case WASMJOBS_PLUGIN_TYPES_COMMAND_STOP:
        err->tag = WASMJOBS_PLUGIN_TYPES_RUN_ERROR_STOPPED;
        plugin_string_free(params);
        return false;
      case WASMJOBS_PLUGIN_TYPES_COMMAND_CANCEL:
        err->tag = WASMJOBS_PLUGIN_TYPES_RUN_ERROR_CANCELLED;
        plugin_string_free(params);
        return false;
    }
    params_t again;
    parse_params(params, &again);  // one pass of the work: count the text
    words = again.words;
    if (pass % step == 0 || pass == p.repeat) {
      snprintf(line, sizeof line, "%llu/%llu", (unsigned long long)pass, (unsigned long long)p.repeat);
      checkin(line);
    }
  }
  plugin_string_free(params);
  snprintf(line, sizeof line, "%llu words", (unsigned long long)words);
  plugin_string_t message = {(uint8_t *)line, strlen(line)};
  wasmjobs_plugin_host_log(WASMJOBS_PLUGIN_TYPES_LEVEL_INFO, &message);
  return true;
}
