// wordcount in JavaScript: the job of examples/README.md, made a component by
// componentize-js (SpiderMonkey inside the component). Build: ./build.sh <out-dir>.
//
// Bindings follow jco's conventions: the exported interface `job` is an object of
// camelCase functions; a `result<_, E>` is returned by returning normally, or by
// throwing the error payload; variants are `{ tag, val }`; enums are strings; u64
// values are BigInts.
import { checkin, log, opCommand } from 'wasmjobs:plugin/host@0.1.0';

const MAX_REPEAT = 1_000_000_000;

// Words are maximal runs of characters other than space, tab, CR and LF.
function countWords(text) {
  return text.split(/[ \t\n\r]+/).filter((w) => w.length > 0).length;
}

// The parameters, or the message that refuses them.
function parse(json) {
  let params;
  try {
    params = JSON.parse(json);
  } catch (e) {
    return { error: `parameters are not valid JSON: ${e.message}` };
  }
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    return { error: 'parameters must be a JSON object' };
  }
  if (!('text' in params)) return { error: "missing parameter 'text'" };
  if (typeof params.text !== 'string') return { error: "parameter 'text' must be a string" };
  const repeat = params.repeat ?? 1;
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > MAX_REPEAT) {
    return { error: `parameter 'repeat' must be an integer from 1 to ${MAX_REPEAT}` };
  }
  return { text: params.text, repeat };
}

export const job = {
  describe() {
    return {
      name: 'wordcount-js',
      description: 'counts the words of `text`, `repeat` times (JavaScript)',
      capacity: [],
      backoff: { initialBackoffMs: 1000n, maxBackoffMs: 300000n },
      memoryMib: 0,
    };
  },

  maxFails() {
    return 0;
  },

  shouldRetry(_failure, _attempt) {
    return true;
  },

  validate(json) {
    const { error } = parse(json);
    if (error) throw error;
  },

  run(_ctx, json) {
    const { error, text, repeat } = parse(json);
    if (error) throw { tag: 'failed', val: error };
    const step = Math.max(1, Math.floor(repeat / 10));
    let words = 0;
    for (let pass = 1; pass <= repeat; pass++) {
      switch (opCommand()) {
        case 'stop':
          throw { tag: 'stopped' };
        case 'cancel':
          throw { tag: 'cancelled' };
      }
      words = countWords(text);
      if (pass % step === 0 || pass === repeat) checkin(`${pass}/${repeat}`);
    }
    log('info', `${words} words`);
  },
};
