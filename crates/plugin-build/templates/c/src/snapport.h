// Small helpers over the generated bindings (backend_plugin.h, made by `snapport plugin
// build` from wit/backend.wit into bindings/: read it for every call).
//
// Ownership, as wit-bindgen's C bindings define it:
// - What an exported function returns (strings, lists, errors) is freed by the bindings
//   after the host copied it: build it with malloc (sp_dup, sp_fail), never point it at
//   a literal or a stack buffer.
// - What a host call returns is yours to free (or to hand on as your own result).
// - Strings you pass to a host call are only borrowed: sp_str over a literal is fine.
// - The arguments of an exported function (strings, lists, a present option's value) are
//   yours: free them before returning (backend_plugin_string_free and friends), as
//   plugin.c does.
//
// There is no WASI in the sandbox: no stdio, clock or files. wasi-libc's printf family
// (snprintf included) drags in stdio's WASI imports, and the build refuses those: format
// with sp_format (%s %d %u %x %lld %llu %llx %zu %%; anything else panics) and log with
// sp_log.
#ifndef SNAPPORT_HELPERS_H
#define SNAPPORT_HELPERS_H

#include "backend_plugin.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef backend_plugin_string_t sp_string;
typedef snapport_backend_types_backend_error_t sp_error;

// `snapport plugin build` defines these from snapport-plugin.toml.
#ifndef SNAPPORT_PLUGIN_NAME
#define SNAPPORT_PLUGIN_NAME "plugin"
#endif
#ifndef SNAPPORT_PLUGIN_VERSION
#define SNAPPORT_PLUGIN_VERSION "0.1.0"
#endif

// A borrowed view of a C string, for arguments of host calls.
static inline sp_string sp_str(const char *s) {
    sp_string out;
    backend_plugin_string_set(&out, s);
    return out;
}

// A heap copy of a C string, for results.
static inline sp_string sp_dup(const char *s) {
    sp_string out;
    backend_plugin_string_dup(&out, s);
    return out;
}

// A NUL-terminated heap copy of a WIT string (free it).
static inline char *sp_cstr(const sp_string *s) {
    char *out = malloc(s->len + 1);
    if (!out) __builtin_trap();
    memcpy(out, s->ptr, s->len);
    out[s->len] = 0;
    return out;
}

// Frees an argument string an exported function was given (NULL: an absent option).
static inline void sp_free_arg(sp_string *s) {
    if (s) backend_plugin_string_free(s);
}

static inline int sp_ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

// sp_panic is used by the formatter; its body is below.
static inline _Noreturn void sp_panic(const char *message);

// printf-like formatting into `buf` (always NUL-terminated, cut to `size`), without
// wasi-libc's stdio. Conversions: %s %d %u %x %lld %llu %llx %zu %% (no flags, widths
// or precisions). Any other conversion stops the plugin with sp_panic rather than read
// an argument as the wrong type (the format attribute lets the compiler check types,
// not which conversions this function knows).
static inline void sp_vformat(char *buf, size_t size, const char *fmt, va_list ap) {
    size_t n = 0;
#define SP_PUT(c) do { if (n + 1 < size) buf[n++] = (c); } while (0)
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') { SP_PUT(*f); continue; }
        f++;
        unsigned long long v;
        bool negative = false;
        unsigned base = 10;
        if (*f == '%') {
            SP_PUT('%');
            continue;
        } else if (*f == 's') {
            const char *s = va_arg(ap, const char *);
            for (s = s ? s : "(null)"; *s; s++) SP_PUT(*s);
            continue;
        } else if (*f == 'd' || *f == 'i') {
            long long d = va_arg(ap, int);
            negative = d < 0;
            v = negative ? 0ULL - (unsigned long long)d : (unsigned long long)d;
        } else if (*f == 'u' || *f == 'x') {
            v = va_arg(ap, unsigned);
            base = *f == 'x' ? 16 : 10;
        } else if (f[0] == 'z' && f[1] == 'u') {
            v = va_arg(ap, size_t);
            f += 1;
        } else if (f[0] == 'l' && f[1] == 'l' && (f[2] == 'u' || f[2] == 'x')) {
            v = va_arg(ap, unsigned long long);
            base = f[2] == 'x' ? 16 : 10;
            f += 2;
        } else if (f[0] == 'l' && f[1] == 'l' && (f[2] == 'd' || f[2] == 'i')) {
            long long d = va_arg(ap, long long);
            negative = d < 0;
            v = negative ? 0ULL - (unsigned long long)d : (unsigned long long)d;
            f += 2;
        } else {
            sp_panic("sp_format: unsupported conversion (use %s %d %u %x %lld %llu %llx %zu %%)");
        }
        char digits[24];
        int d = 0;
        do { digits[d++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
        if (negative) SP_PUT('-');
        while (d) SP_PUT(digits[--d]);
    }
#undef SP_PUT
    if (size) buf[n] = 0;
}

static inline void sp_format(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void sp_format(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sp_vformat(buf, size, fmt, ap);
    va_end(ap);
}

// Fills `err` with an error of kind `tag` (SNAPPORT_BACKEND_TYPES_BACKEND_ERROR_*) and a
// formatted message, and returns false: `return sp_fail(err, ..._NOT_FOUND, "no %s", x);`.
static inline bool sp_fail(sp_error *err, uint8_t tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline bool sp_fail(sp_error *err, uint8_t tag, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    sp_vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    err->tag = tag;
    // Every variant holds a string at the same place.
    err->val.not_found = sp_dup(buf);
    return false;
}

// A line in the operator's log (SNAPPORT_BACKEND_TYPES_LOG_LEVEL_*).
static inline void sp_log(uint8_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void sp_log(uint8_t level, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    sp_vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sp_string s = sp_str(buf);
    snapport_backend_host_log(level, &s);
}

// Stops the plugin with a message the operator reads ("panicked while ...: MESSAGE"):
// for states that must not happen. The call traps; the operation fails.
static inline _Noreturn void sp_panic(const char *message) {
    sp_string s = sp_str(message);
    snapport_backend_host_panicked(&s);
    __builtin_trap();
}

#endif
