#include "dl_loader.h"

#include <cstdlib>
#include <cstring>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#include <glob.h>
#include <unistd.h>
#define SIFT_HAVE_DLOPEN 1
#endif

namespace sift::dl {

std::vector<std::string> candidates(const Places& places) {
  std::vector<std::string> out;
  if (places.file && *places.file) out.push_back(places.file);
  for (const auto& n : places.names) out.push_back(n);
  for (const auto& d : places.dirs)
    for (const auto& n : places.names) out.push_back(d + "/" + n);
  return out;
}

std::vector<std::string> cuda_dirs(const std::vector<std::string>& roots) {
  std::vector<std::string> dirs;
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"})
    if (const char* e = std::getenv(var); e && *e) {
      dirs.push_back(std::string(e) + "/lib64");
      dirs.push_back(std::string(e) + "/targets/x86_64-linux/lib");
    }
  for (const auto& r : roots) {
    dirs.push_back(r + "/targets/x86_64-linux/lib");
    dirs.push_back(r + "/lib64");
  }
  return dirs;
}

std::vector<std::string> python_package_dirs(const std::string& package_lib) {
  std::vector<std::string> patterns;
  for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"})
    if (const char* e = std::getenv(var); e && *e)
      patterns.push_back(std::string(e) + "/lib/python3*/site-packages/" + package_lib);
  if (const char* h = std::getenv("HOME"); h && *h)
    patterns.push_back(std::string(h) + "/.local/lib/python3*/site-packages/" + package_lib);
  for (const char* sys : {"/usr/local/lib/python3*/dist-packages/", "/usr/local/lib/python3*/site-packages/",
                          "/usr/lib/python3*/dist-packages/"})
    patterns.push_back(sys + package_lib);
  std::vector<std::string> dirs;
#ifdef SIFT_HAVE_DLOPEN
  for (const auto& p : patterns) {
    glob_t g{};
    if (::glob(p.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; i++) dirs.push_back(g.gl_pathv[i]);
    ::globfree(&g);
  }
#endif
  return dirs;
}

std::string Loaded::tried() const {
  const size_t n = rejected.size() + size_t(absent);
  std::string s = std::to_string(n) + (n == 1 ? " place tried" : " places tried");
  if (rejected.empty()) return s + ", none present";
  s += ": ";
  for (size_t i = 0; i < rejected.size(); i++) s += (i ? "; " : "") + rejected[i];
  return s;
}

Loaded open_first(const std::vector<std::string>& candidates, const std::vector<Symbol>& symbols) {
  Loaded out;
  auto clear = [&] {
    for (const auto& s : symbols) s.set(nullptr);
  };
  clear();
#ifdef SIFT_HAVE_DLOPEN
  for (const std::string& name : candidates) {
    // A path that does not exist is only counted: most candidates are guesses.
    if (name.find('/') != std::string::npos && ::access(name.c_str(), F_OK) != 0) {
      out.absent++;
      continue;
    }
    void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      // Absent only when the candidate itself is missing ("<name>: cannot open shared object file:
      // No such file or directory"); a present library whose dependency is missing says so with the
      // dependency's name, which the error must show.
      const char* why = dlerror();
      const std::string own = name + ": cannot open shared object file";
      if (why && std::strncmp(why, own.c_str(), own.size()) == 0 && std::strstr(why, "No such file")) {
        out.absent++;
      } else {
        out.rejected.push_back(name + ": " + (why ? why : "cannot be opened"));
      }
      continue;
    }
    std::string missing;
    void* anchor = nullptr;
    for (const auto& s : symbols) {
      void* p = dlsym(h, s.name);
      s.set(p);
      if (p && !anchor) anchor = p;
      if (!p && s.required) missing += std::string(missing.empty() ? "" : ", ") + s.name;
    }
    if (!missing.empty()) {
      clear();
      dlclose(h);
      out.rejected.push_back(name + ": has no " + missing);
      continue;
    }
    out.handle = h;
    out.path = name;
#if defined(__GLIBC__) || defined(__APPLE__)
    Dl_info info;
    if (anchor && dladdr(anchor, &info) && info.dli_fname) out.path = info.dli_fname;
#endif
    return out;
  }
#else
  out.rejected.push_back("dlopen is not available on this platform");
#endif
  return out;
}

}  // namespace sift::dl
