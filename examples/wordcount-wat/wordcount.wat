;; wordcount in hand-written WebAssembly text: the job of examples/README.md,
;; written directly against the component model's canonical ABI for the world
;; `wasmjobs:plugin/plugin` (wit/job.wit). Build: ./build.sh <out-dir>, which embeds
;; the world's type and wraps this module into a component.
;;
;; The canonical ABI, as used here:
;; - an import `host.f` of interface `wasmjobs:plugin/host@0.1.0` is the core import
;;   ("wasmjobs:plugin/host@0.1.0" "f"); strings are passed as (pointer, length);
;;   enums (level, command) as i32;
;; - an export `job.f` is the core export "wasmjobs:plugin/job@0.1.0#f"; arguments
;;   arrive flattened (a string is two i32s, an option<string> three); a result that
;;   flattens to more than one value is written to memory and its address returned;
;; - the host copies strings it passes in (job context, params) into memory obtained
;;   from our `cabi_realloc`; each call runs in a fresh instance, so a bump allocator
;;   that never frees is enough.
;;
;; Simplifications of this example (the host hands `run` compact JSON, as stored):
;; keys are found by their first occurrence (a nested object with a "text" key
;; before the top-level one would be taken), and \uXXXX escapes count as letters.
(module
  (import "wasmjobs:plugin/host@0.1.0" "checkin" (func $checkin (param i32 i32)))
  (import "wasmjobs:plugin/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (import "wasmjobs:plugin/host@0.1.0" "op-command" (func $op_command (result i32)))

  (memory (export "memory") 1)

  ;; Constant strings.
  (data (i32.const 16) "wordcount-wat")                                            ;; 13
  (data (i32.const 32) "counts the words of `text`, `repeat` times (WAT)")         ;; 48
  (data (i32.const 96) "missing parameter 'text'")                                 ;; 24
  (data (i32.const 128) "parameter 'text' must be a string")                       ;; 33
  (data (i32.const 176) "parameter 'repeat' must be an integer from 1 to 1000000000") ;; 58
  (data (i32.const 240) "parameters must be a JSON object")                        ;; 32
  (data (i32.const 288) "\"text\"")                                                ;; 6
  (data (i32.const 296) "\"repeat\"")                                              ;; 8
  (data (i32.const 304) " words")                                                  ;; 6
  ;; 512: describe's return area (job-info, 48 bytes, align 8)
  ;; 576: validate's and run's return area (result, 16 bytes)
  ;; 640: scratch for check-in and log lines
  ;; 1024..: the heap of cabi_realloc

  (global $heap (mut i32) (i32.const 1024))
  (global $err_ptr (mut i32) (i32.const 0))
  (global $err_len (mut i32) (i32.const 0))
  (global $text (mut i32) (i32.const 0))   ;; address of the opening quote of "text"'s value
  (global $reps (mut i64) (i64.const 0))   ;; the repeat parameter

  ;; The canonical ABI's allocator: the host calls it to place arguments in our memory.
  (func (export "cabi_realloc")
    (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $ptr i32) (local $need i32)
    (local.set $ptr
      (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
               (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (local.set $need (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then
        (if (i32.eq (memory.grow (i32.shr_u (i32.add (local.get $need) (i32.const 65535)) (i32.const 16)))
                    (i32.const -1))
          (then unreachable))))
    (if (local.get $old)
      (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
    (local.get $ptr))

  ;; Space, tab, LF, CR.
  (func $is_ws (param $c i32) (result i32)
    (i32.or
      (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
      (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13)))))

  (func $skip_ws (param $p i32) (param $end i32) (result i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (br_if $done (i32.eqz (call $is_ws (i32.load8_u (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; The address of the value of key [$k, $k+$klen) (quotes included) in [$p, $end),
  ;; past the colon and whitespace; 0 when the key is absent.
  (func $value_of (param $p i32) (param $end i32) (param $k i32) (param $klen i32) (result i32)
    (local $i i32)
    (block $absent
      (loop $scan
        (br_if $absent (i32.gt_u (i32.add (local.get $p) (local.get $klen)) (local.get $end)))
        (local.set $i (i32.const 0))
        (block $mismatch
          (loop $compare
            (if (i32.eq (local.get $i) (local.get $klen))
              (then
                (local.set $i (call $skip_ws (i32.add (local.get $p) (local.get $klen)) (local.get $end)))
                (if (i32.and (i32.lt_u (local.get $i) (local.get $end))
                             (i32.eq (i32.load8_u (local.get $i)) (i32.const 58))) ;; ':'
                  (then (return (call $skip_ws (i32.add (local.get $i) (i32.const 1)) (local.get $end)))))
                (br $mismatch)))
            (br_if $mismatch
              (i32.ne (i32.load8_u (i32.add (local.get $p) (local.get $i)))
                      (i32.load8_u (i32.add (local.get $k) (local.get $i)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $compare)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (i32.const 0))

  ;; Words of the JSON string whose opening quote is at $p: maximal runs of
  ;; characters other than space, tab, LF and CR (\n, \t, \r escapes included).
  ;; -1 when the string is not terminated.
  (func $count_words (param $p i32) (param $end i32) (result i64)
    (local $c i32) (local $space i32) (local $in_word i32) (local $n i64)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (block $done
      (loop $next
        (if (i32.ge_u (local.get $p) (local.get $end)) (then (return (i64.const -1))))
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $done (i32.eq (local.get $c) (i32.const 34)))   ;; closing quote
        (if (i32.eq (local.get $c) (i32.const 92))              ;; backslash
          (then
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (if (i32.ge_u (local.get $p) (local.get $end)) (then (return (i64.const -1))))
            (local.set $c (i32.load8_u (local.get $p)))
            (local.set $space
              (i32.or (i32.eq (local.get $c) (i32.const 110))   ;; \n
                (i32.or (i32.eq (local.get $c) (i32.const 116)) ;; \t
                        (i32.eq (local.get $c) (i32.const 114)))))) ;; \r
          (else (local.set $space (call $is_ws (local.get $c)))))
        (if (i32.and (i32.eqz (local.get $space)) (i32.eqz (local.get $in_word)))
          (then (local.set $n (i64.add (local.get $n) (i64.const 1)))))
        (local.set $in_word (i32.eqz (local.get $space)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; The "repeat" parameter: 1 when absent, 0 when not an integer from 1 to 1e9.
  (func $repeat (param $p i32) (param $end i32) (result i64)
    (local $v i32) (local $c i32) (local $digits i32) (local $n i64)
    (local.set $v (call $value_of (local.get $p) (local.get $end) (i32.const 296) (i32.const 8)))
    (if (i32.eqz (local.get $v)) (then (return (i64.const 1))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $v) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $v)))
        (br_if $done (i32.or (i32.lt_u (local.get $c) (i32.const 48)) (i32.gt_u (local.get $c) (i32.const 57))))
        (local.set $n
          (i64.add (i64.mul (local.get $n) (i64.const 10))
                   (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
        (if (i64.gt_u (local.get $n) (i64.const 1000000000)) (then (return (i64.const 0))))
        (local.set $digits (i32.const 1))
        (local.set $v (i32.add (local.get $v) (i32.const 1)))
        (br $next)))
    (if (i32.eqz (local.get $digits)) (then (return (i64.const 0))))
    ;; not a fraction or an exponent
    (if (i32.lt_u (local.get $v) (local.get $end))
      (then
        (local.set $c (i32.load8_u (local.get $v)))
        (if (i32.or (i32.eq (local.get $c) (i32.const 46))
              (i32.or (i32.eq (local.get $c) (i32.const 101)) (i32.eq (local.get $c) (i32.const 69))))
          (then (return (i64.const 0))))))
    (local.get $n))

  (func $problem (param $ptr i32) (param $len i32) (result i32)
    (global.set $err_ptr (local.get $ptr))
    (global.set $err_len (local.get $len))
    (i32.const 1))

  ;; Check the parameters: 1 with $err_ptr/$err_len set when they are refused,
  ;; 0 with $text and $reps set when they are fine.
  (func $check (param $p i32) (param $len i32) (result i32)
    (local $end i32) (local $v i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (local.set $v (call $skip_ws (local.get $p) (local.get $end)))
    (if (i32.or (i32.ge_u (local.get $v) (local.get $end))
                (i32.ne (i32.load8_u (local.get $v)) (i32.const 123)))       ;; '{'
      (then (return (call $problem (i32.const 240) (i32.const 32)))))
    (local.set $v (call $value_of (local.get $p) (local.get $end) (i32.const 288) (i32.const 6)))
    (if (i32.eqz (local.get $v))
      (then (return (call $problem (i32.const 96) (i32.const 24)))))
    (if (i32.or (i32.ge_u (local.get $v) (local.get $end))
                (i32.ne (i32.load8_u (local.get $v)) (i32.const 34)))        ;; '"'
      (then (return (call $problem (i32.const 128) (i32.const 33)))))
    (if (i64.lt_s (call $count_words (local.get $v) (local.get $end)) (i64.const 0))
      (then (return (call $problem (i32.const 128) (i32.const 33)))))
    (global.set $text (local.get $v))
    (global.set $reps (call $repeat (local.get $p) (local.get $end)))
    (if (i64.eqz (global.get $reps))
      (then (return (call $problem (i32.const 176) (i32.const 58)))))
    (i32.const 0))

  ;; Write $n in decimal at $dst; the address after the last digit.
  (func $utoa (param $n i64) (param $dst i32) (result i32)
    (local $len i32) (local $t i64) (local $i i32)
    (local.set $t (local.get $n))
    (loop $count
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (local.set $t (i64.div_u (local.get $t) (i64.const 10)))
      (br_if $count (i64.ne (local.get $t) (i64.const 0))))
    (local.set $i (local.get $len))
    (loop $write
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i))
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10)))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $write (i32.ne (local.get $i) (i32.const 0))))
    (i32.add (local.get $dst) (local.get $len)))

  ;; describe: func() -> job-info. Record layout: name (ptr, len) @0, description
  ;; @8, capacity list @16, backoff {initial u64 @24, max u64 @32}, memory-mib @40.
  (func (export "wasmjobs:plugin/job@0.1.0#describe") (result i32)
    (i32.store (i32.const 512) (i32.const 16))
    (i32.store (i32.const 516) (i32.const 13))
    (i32.store (i32.const 520) (i32.const 32))
    (i32.store (i32.const 524) (i32.const 48))
    (i32.store (i32.const 528) (i32.const 0))
    (i32.store (i32.const 532) (i32.const 0))
    (i64.store (i32.const 536) (i64.const 1000))
    (i64.store (i32.const 544) (i64.const 300000))
    (i32.store (i32.const 552) (i32.const 0))
    (i32.const 512))

  ;; max-fails: func() -> u32. 0: the host's default.
  (func (export "wasmjobs:plugin/job@0.1.0#max-fails") (result i32)
    (i32.const 0))

  ;; should-retry: func(failure: string, attempt: u32) -> bool.
  (func (export "wasmjobs:plugin/job@0.1.0#should-retry") (param i32 i32 i32) (result i32)
    (i32.const 1))

  ;; validate: func(params: string) -> result<_, string>.
  ;; Layout: discriminant u8 @0, error string (ptr, len) @4.
  (func (export "wasmjobs:plugin/job@0.1.0#validate") (param $p i32) (param $len i32) (result i32)
    (if (call $check (local.get $p) (local.get $len))
      (then
        (i32.store8 (i32.const 576) (i32.const 1))
        (i32.store (i32.const 580) (global.get $err_ptr))
        (i32.store (i32.const 584) (global.get $err_len)))
      (else (i32.store8 (i32.const 576) (i32.const 0))))
    (i32.const 576))

  ;; run: func(ctx: job-context, params: string) -> result<_, run-error>.
  ;; ctx flattens to job-id (ptr, len), attempt, upstream-job-id (is-some, ptr, len).
  ;; Layout: discriminant u8 @0; run-error: case u8 @4 (0 failed, 1 stopped,
  ;; 2 cancelled), failed's message (ptr, len) @8.
  (func (export "wasmjobs:plugin/job@0.1.0#run")
    (param $id i32) (param $id_len i32) (param $attempt i32)
    (param $has_upstream i32) (param $upstream i32) (param $upstream_len i32)
    (param $p i32) (param $len i32) (result i32)
    (local $end i32) (local $step i64) (local $pass i64) (local $words i64) (local $cmd i32) (local $at i32)
    (i32.store8 (i32.const 576) (i32.const 1))
    (if (call $check (local.get $p) (local.get $len))
      (then
        (i32.store8 (i32.const 580) (i32.const 0))
        (i32.store (i32.const 584) (global.get $err_ptr))
        (i32.store (i32.const 588) (global.get $err_len))
        (return (i32.const 576))))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (local.set $step (i64.div_u (global.get $reps) (i64.const 10)))
    (if (i64.eqz (local.get $step)) (then (local.set $step (i64.const 1))))
    (local.set $pass (i64.const 1))
    (loop $passes
      ;; command: 0 none, 1 stop, 2 cancel -- the same numbers as run-error's
      ;; stopped and cancelled cases.
      (local.set $cmd (call $op_command))
      (if (local.get $cmd)
        (then
          (i32.store8 (i32.const 580) (local.get $cmd))
          (return (i32.const 576))))
      (local.set $words (call $count_words (global.get $text) (local.get $end)))
      (if (i32.or (i64.eqz (i64.rem_u (local.get $pass) (local.get $step)))
                  (i64.eq (local.get $pass) (global.get $reps)))
        (then
          ;; check in "<pass>/<repeat>"
          (local.set $at (call $utoa (local.get $pass) (i32.const 640)))
          (i32.store8 (local.get $at) (i32.const 47))
          (local.set $at (call $utoa (global.get $reps) (i32.add (local.get $at) (i32.const 1))))
          (call $checkin (i32.const 640) (i32.sub (local.get $at) (i32.const 640)))))
      (local.set $pass (i64.add (local.get $pass) (i64.const 1)))
      (br_if $passes (i64.le_u (local.get $pass) (global.get $reps))))
    ;; log "<words> words" at level info (1)
    (local.set $at (call $utoa (local.get $words) (i32.const 640)))
    (memory.copy (local.get $at) (i32.const 304) (i32.const 6))
    (call $log (i32.const 1) (i32.const 640) (i32.sub (i32.add (local.get $at) (i32.const 6)) (i32.const 640)))
    (i32.store8 (i32.const 576) (i32.const 0))
    (i32.const 576))
)
