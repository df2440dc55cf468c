// Keeps the addon loadable on glibc 2.34 and newer although it is built on a newer system.
// libstdc++ is linked statically (CMakeLists.txt), and the build machine's libstdc++.a refers to
// arc4random (glibc 2.36) from std::random_device, which sift-ft never uses but which other
// library members pull in. This definition satisfies that reference inside the addon (hidden, so
// nothing outside sees it), with the same contract: 32 random bits from the kernel's CSPRNG.
#include <cerrno>
#include <cstddef>
#include <cstdint>

#if defined(__linux__) && defined(__GLIBC__)
#include <sys/syscall.h>
#include <unistd.h>

extern "C" __attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t v = 0;
  unsigned char* p = reinterpret_cast<unsigned char*>(&v);
  size_t got = 0;
  while (got < sizeof v) {
    long n = syscall(SYS_getrandom, p + got, sizeof v - got, 0);
    if (n > 0)
      got += size_t(n);
    else if (n < 0 && errno != EINTR)
      break;
  }
  return v;
}
#endif
