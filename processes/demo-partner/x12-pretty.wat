;; x12-pretty: a complete WASI preview 1 guest in WebAssembly text.
;; Reads an X12 document on stdin and writes it to stdout with a line break
;; after every segment terminator ('~'), so each segment is on its own line.
;; Logs one line to stderr (the process log). Exit code 0 means success.
;;
;; Memory: [0, 64) scratch for iovecs and counters; the input from 64 KiB
;; on; the output right after the input (at most twice its size).
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 32) "x12-pretty: segments split\n")

  ;; Grows memory so that [0, end) is addressable; exits 2 when refused.
  (func $ensure (param $end i32)
    (local $have i32)
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow
                (i32.add
                  (i32.div_u (i32.sub (local.get $end) (local.get $have)) (i32.const 65536))
                  (i32.const 1)))
              (i32.const -1))
          (then (call $proc_exit (i32.const 2)))))))

  ;; Writes [ptr, ptr+len) to a file descriptor, looping on short writes.
  (func $write_all (param $fd i32) (param $ptr i32) (param $len i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
        (br $more))))

  (func (export "_start")
    (local $end i32) (local $in i32) (local $out i32) (local $o i32) (local $byte i32)
    ;; Read all of stdin, 64 KiB at a time.
    (local.set $end (i32.const 65536))
    (block $eof
      (loop $read
        (call $ensure (i32.add (local.get $end) (i32.const 65536)))
        (i32.store (i32.const 0) (local.get $end))
        (i32.store (i32.const 4) (i32.const 65536))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (br_if $eof (i32.eqz (i32.load (i32.const 8))))
        (local.set $end (i32.add (local.get $end) (i32.load (i32.const 8))))
        (br $read)))
    ;; Copy to the output area, adding '\n' after each '~' not already followed by one.
    (local.set $out (local.get $end))
    (call $ensure (i32.add (local.get $out)
      (i32.mul (i32.sub (local.get $end) (i32.const 65536)) (i32.const 2))))
    (local.set $o (local.get $out))
    (local.set $in (i32.const 65536))
    (block $copied
      (loop $copy
        (br_if $copied (i32.ge_u (local.get $in) (local.get $end)))
        (local.set $byte (i32.load8_u (local.get $in)))
        (i32.store8 (local.get $o) (local.get $byte))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (if (i32.eq (local.get $byte) (i32.const 126)) ;; '~'
          (then
            (if (i32.or
                  (i32.ge_u (i32.add (local.get $in) (i32.const 1)) (local.get $end))
                  (i32.and
                    (i32.ne (i32.load8_u (i32.add (local.get $in) (i32.const 1))) (i32.const 10))
                    (i32.ne (i32.load8_u (i32.add (local.get $in) (i32.const 1))) (i32.const 13))))
              (then
                (i32.store8 (local.get $o) (i32.const 10))
                (local.set $o (i32.add (local.get $o) (i32.const 1)))))))
        (local.set $in (i32.add (local.get $in) (i32.const 1)))
        (br $copy)))
    (call $write_all (i32.const 1) (local.get $out) (i32.sub (local.get $o) (local.get $out)))
    (call $write_all (i32.const 2) (i32.const 32) (i32.const 27))))
