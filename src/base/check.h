// Programmer errors: conditions that no input can cause. SNUG_CHECK is always
// on and aborts with the location; SNUG_DCHECK compiles away in release builds.
#pragma once

namespace snug {
[[noreturn]] void check_failed(const char* expr, const char* file, int line);
}

#define SNUG_CHECK(cond) ((cond) ? (void)0 : ::snug::check_failed(#cond, __FILE__, __LINE__))
#ifdef NDEBUG
#define SNUG_DCHECK(cond) ((void)0)
#else
#define SNUG_DCHECK(cond) SNUG_CHECK(cond)
#endif
