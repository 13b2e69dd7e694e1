// The HDF5 reader runs libhdf5 in a forked child (see hdf5.h). The parent never calls into
// libhdf5, so no lock of the library can be held across fork() by another scanner thread.
#include "aegis/formats/hdf5.h"

#include <fcntl.h>
#include <hdf5.h>
#include <hdf5_hl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string_view>

namespace aegis::formats {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

constexpr std::string_view kSignature = "\x89HDF\r\n\x1a\n";

}  // namespace
}  // namespace aegis::formats

// Present only in sanitizer builds. libFuzzer installs a death callback that writes the current
// input as a crash file; in the reader's child that would blame libhdf5's bugs on our harness.
extern "C" __attribute__((weak)) void __sanitizer_set_death_callback(void (*callback)(void));

namespace aegis::formats {
namespace {

// ---- the child's side: walk the file and stream records to the pipe ---------------------------

class RecordWriter {
 public:
  explicit RecordWriter(int fd) : fd_(fd) {}
  ~RecordWriter() { flush(); }

  void record(char tag, std::initializer_list<std::string_view> fields) {
    buffer_.push_back(tag);
    for (auto field : fields) {
      std::uint32_t size = static_cast<std::uint32_t>(field.size());
      buffer_.append(reinterpret_cast<const char*>(&size), sizeof size);
      buffer_.append(field);
    }
    if (buffer_.size() > (1u << 16)) flush();
  }

  void flush() {
    std::size_t done = 0;
    while (done < buffer_.size()) {
      ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(3);  // the parent went away
      done += static_cast<std::size_t>(n);
    }
    buffer_.clear();
  }

 private:
  int fd_;
  std::string buffer_;
};

struct Walk {
  RecordWriter* out = nullptr;
  const Hdf5Limits* limits = nullptr;
  hid_t file = -1;
  std::size_t objects = 0;
  std::size_t attributes = 0;
  std::uint64_t attribute_bytes = 0;
  bool limit_hit = false;
  std::string current;  // the object whose attributes are being read
};

std::string strip_nuls(const char* text, std::size_t size) {
  std::size_t end = 0;
  while (end < size && text[end] != '\0') ++end;
  return std::string(text, end);
}

// Reads one string attribute (scalar or array, fixed or variable length) into `value`.
bool read_string_attribute(hid_t attr, hid_t type, Walk& walk, std::string& value, bool& truncated) {
  hid_t space = H5Aget_space(attr);
  if (space < 0) return false;
  hssize_t points = H5Sget_simple_extent_npoints(space);
  bool ok = false;
  const std::uint64_t cap = walk.limits->max_attribute_bytes;
  if (points > 0 && static_cast<std::uint64_t>(points) <= (1u << 20)) {
    std::size_t count = static_cast<std::size_t>(points);
    hid_t memtype = H5Tcopy(H5T_C_S1);
    H5Tset_cset(memtype, H5Tget_cset(type));
    if (H5Tis_variable_str(type) > 0) {
      H5Tset_size(memtype, H5T_VARIABLE);
      std::vector<char*> strings(count, nullptr);
      if (H5Aread(attr, memtype, strings.data()) >= 0) {
        ok = true;
        for (std::size_t i = 0; i < count; ++i) {
          if (i) value.push_back('\n');
          if (strings[i]) value.append(strings[i], strnlen(strings[i], cap));
          if (value.size() > cap) {
            value.resize(cap);
            truncated = true;
            break;
          }
        }
        H5Dvlen_reclaim(memtype, space, H5P_DEFAULT, strings.data());
      }
    } else {
      std::size_t size = H5Tget_size(type);
      if (size > 0 && size <= cap && count <= cap / size) {
        H5Tset_size(memtype, size);
        H5Tset_strpad(memtype, H5T_STR_NULLPAD);  // keep all `size` bytes; the NULs are stripped below
        std::vector<char> buffer(size * count);
        if (H5Aread(attr, memtype, buffer.data()) >= 0) {
          ok = true;
          for (std::size_t i = 0; i < count; ++i) {
            if (i) value.push_back('\n');
            value += strip_nuls(buffer.data() + i * size, size);
          }
        }
      } else {
        truncated = true;
      }
    }
    H5Tclose(memtype);
  }
  H5Sclose(space);
  return ok;
}

herr_t on_attribute(hid_t location, const char* name, const H5A_info_t*, void* data) {
  auto& walk = *static_cast<Walk*>(data);
  if (++walk.attributes > walk.limits->max_attributes || walk.attribute_bytes > walk.limits->max_attribute_bytes) {
    walk.limit_hit = true;
    return 1;
  }
  hid_t attr = H5Aopen(location, name, H5P_DEFAULT);
  if (attr < 0) return 0;
  hid_t type = H5Aget_type(attr);
  if (type >= 0 && H5Tget_class(type) == H5T_STRING) {
    std::string value;
    bool truncated = false;
    if (read_string_attribute(attr, type, walk, value, truncated)) {
      walk.attribute_bytes += value.size();
      walk.out->record('A', {walk.current, name, value, truncated ? "1" : "0"});
    }
  }
  if (type >= 0) H5Tclose(type);
  H5Aclose(attr);
  return 0;
}

void read_attributes(hid_t object, const std::string& path, Walk& walk) {
  walk.current = path;
  hsize_t index = 0;
  H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_NATIVE, &index, on_attribute, &walk);
}

herr_t on_object(hid_t root, const char* name, const H5O_info_t* info, void* data) {
  auto& walk = *static_cast<Walk*>(data);
  if (++walk.objects > walk.limits->max_objects) {
    walk.limit_hit = true;
    return 1;
  }
  if (walk.limit_hit) return 1;
  if (info->type != H5O_TYPE_GROUP && info->type != H5O_TYPE_DATASET) return 0;
  if (info->num_attrs == 0) return 0;
  std::string path = std::strcmp(name, ".") == 0 ? "/" : "/" + std::string(name);
  hid_t object = H5Oopen(root, name, H5P_DEFAULT);
  if (object < 0) return 0;
  read_attributes(object, path, walk);
  H5Oclose(object);
  return walk.limit_hit ? 1 : 0;
}

herr_t on_link(hid_t group, const char* name, const H5L_info_t* info, void* data) {
  auto& walk = *static_cast<Walk*>(data);
  if (info->type != H5L_TYPE_EXTERNAL && info->type != H5L_TYPE_SOFT) return 0;
  std::size_t size = info->u.val_size;
  if (size == 0 || size > (1u << 16)) return 0;
  std::vector<char> value(size);
  if (H5Lget_val(group, name, value.data(), size, H5P_DEFAULT) < 0) return 0;
  std::string path = "/" + std::string(name);
  auto slash = path.rfind('/');
  std::string object = slash == 0 ? "/" : path.substr(0, slash);
  std::string leaf = path.substr(slash + 1);
  if (info->type == H5L_TYPE_SOFT) {
    walk.out->record('L', {object, leaf, "soft", strip_nuls(value.data(), size)});
  } else {
    unsigned flags = 0;
    const char* file = nullptr;
    const char* target = nullptr;
    if (H5Lunpack_elink_val(value.data(), size, &flags, &file, &target) >= 0)
      walk.out->record('L', {object, leaf, "external",
                             std::string(file ? file : "?") + ":" + std::string(target ? target : "?")});
  }
  return 0;
}

[[noreturn]] void child_main(std::span<const std::uint8_t> data, const Hdf5Limits& limits, int fd) {
  if (&__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(nullptr);
  struct rlimit core_limit{0, 0};
  setrlimit(RLIMIT_CORE, &core_limit);
  struct rlimit cpu{limits.cpu_seconds, limits.cpu_seconds + 1};
  setrlimit(RLIMIT_CPU, &cpu);
  if (!kAddressSanitizer) {
    struct rlimit current{};
    if (getrlimit(RLIMIT_DATA, &current) == 0) {
      // VmData of this process now, plus the allowance.
      std::uint64_t used = 0;
      std::ifstream status("/proc/self/status");
      std::string line;
      while (std::getline(status, line))
        if (line.rfind("VmData:", 0) == 0) used = std::strtoull(line.c_str() + 7, nullptr, 10) << 10;
      rlim_t want = static_cast<rlim_t>(used + limits.memory_bytes);
      if (current.rlim_max == RLIM_INFINITY || want < current.rlim_max) {
        struct rlimit data_limit{want, current.rlim_max};
        setrlimit(RLIMIT_DATA, &data_limit);
      }
    }
  }
  {
    RecordWriter out(fd);
    if (H5open() < 0) {
      out.record('E', {"libhdf5 could not be initialised"});
      out.flush();
      _exit(0);
    }
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    H5PLset_loading_state(0);  // never load filter plugins named by a file
    // Read-only, and the image is used in place: nothing is copied, nothing written back.
    hid_t file = H5LTopen_file_image(const_cast<std::uint8_t*>(data.data()), data.size(),
                                     H5LT_FILE_IMAGE_DONT_COPY | H5LT_FILE_IMAGE_DONT_RELEASE);
    if (file < 0) {
      out.record('E', {"libhdf5 cannot open the file: the superblock or root group is damaged"});
      out.record('D', {});
      out.flush();
      _exit(0);
    }
    out.record('K', {});
    Walk walk;
    walk.out = &out;
    walk.limits = &limits;
    walk.file = file;
    if (H5Ovisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, on_object, &walk) < 0)
      out.record('E', {"libhdf5 stopped while walking the groups: part of the file is damaged"});
    if (H5Lvisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, on_link, &walk) < 0)
      out.record('E', {"libhdf5 stopped while listing the links: part of the file is damaged"});
    out.record('O', {std::to_string(std::min(walk.objects, limits.max_objects))});
    if (walk.limit_hit) out.record('M', {});
    out.record('D', {});
    out.flush();
    H5Fclose(file);
  }
  _exit(0);
}

// ---- the parent's side ------------------------------------------------------------------------

struct RecordReader {
  std::string_view data;
  std::size_t at = 0;

  bool field(std::string& out) {
    std::uint32_t size = 0;
    if (data.size() - at < sizeof size) return false;
    std::memcpy(&size, data.data() + at, sizeof size);
    at += sizeof size;
    if (data.size() - at < size) return false;
    out.assign(data.substr(at, size));
    at += size;
    return true;
  }
};

void decode(std::string_view bytes, Hdf5Extract& result, bool& done) {
  RecordReader in{bytes};
  while (in.at < bytes.size()) {
    char tag = bytes[in.at++];
    std::string a, b, c, d;
    switch (tag) {
      case 'A':
        if (!in.field(a) || !in.field(b) || !in.field(c) || !in.field(d)) return;
        result.attributes.push_back({std::move(a), std::move(b), std::move(c), d == "1"});
        break;
      case 'L':
        if (!in.field(a) || !in.field(b) || !in.field(c) || !in.field(d)) return;
        result.links.push_back({std::move(a), std::move(b), std::move(c), std::move(d)});
        break;
      case 'E':
        if (!in.field(a)) return;
        if (!result.error.empty()) result.error += "; ";
        result.error += a;
        break;
      case 'K':
        result.opened = true;
        break;
      case 'M':
        result.limit_hit = true;
        break;
      case 'O':
        if (!in.field(a)) return;
        result.objects = std::strtoull(a.c_str(), nullptr, 10);
        break;
      case 'D':
        done = true;
        break;
      default:
        return;
    }
  }
}

std::string describe_signal(int signal) {
  const char* name = strsignal(signal);
  return "signal " + std::to_string(signal) + (name ? std::string(" (") + name + ")" : std::string());
}

}  // namespace

bool looks_like_hdf5(std::span<const std::uint8_t> data) {
  for (std::size_t at = 0; at + kSignature.size() <= data.size(); at = at ? at * 2 : 512) {
    if (std::memcmp(data.data() + at, kSignature.data(), kSignature.size()) == 0) return true;
    if (at >= (1u << 20)) break;  // user blocks beyond 1 MiB are not worth probing for
  }
  return false;
}

Hdf5Extract extract_hdf5(std::span<const std::uint8_t> data, const Hdf5Limits& limits) {
  Hdf5Extract result;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    result.error = std::string("cannot create a pipe for the HDF5 reader: ") + std::strerror(errno);
    return result;
  }
  pid_t child = ::fork();
  if (child < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    result.error = std::string("cannot start the HDF5 reader process: ") + std::strerror(errno);
    return result;
  }
  if (child == 0) {
    ::close(fds[0]);
    child_main(data, limits, fds[1]);
  }
  ::close(fds[1]);

  std::string bytes;
  const std::uint64_t max_bytes = limits.max_attribute_bytes + (16u << 20);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(limits.wall_seconds);
  bool killed_for_time = false, killed_for_size = false;
  char buffer[1 << 16];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      killed_for_time = true;
      break;
    }
    struct pollfd pfd{fds[0], POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    bytes.append(buffer, static_cast<std::size_t>(n));
    if (bytes.size() > max_bytes) {
      killed_for_size = true;
      break;
    }
  }
  ::close(fds[0]);
  if (killed_for_time || killed_for_size) ::kill(child, SIGKILL);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }

  bool done = false;
  decode(bytes, result, done);
  auto note = [&result](const std::string& text) {
    if (!result.error.empty()) result.error += "; ";
    result.error += text;
  };
  if (killed_for_time) {
    result.child_died = true;
    note("libhdf5 took longer than " + std::to_string(limits.wall_seconds) + " s on this file and was stopped");
  } else if (killed_for_size) {
    result.limit_hit = true;
    note("the file's attributes exceed the read limit");
  } else if (WIFSIGNALED(status)) {
    result.child_died = true;
    int signal = WTERMSIG(status);
    note(signal == SIGXCPU ? "libhdf5 used more than " + std::to_string(limits.cpu_seconds) + " s of CPU on this file"
                           : "libhdf5 died on this file with " + describe_signal(signal));
  } else if (!done) {
    result.child_died = true;
    note("the HDF5 reader stopped early (exit status " + std::to_string(WEXITSTATUS(status)) +
         "), probably out of memory");
  }
  return result;
}

}  // namespace aegis::formats
