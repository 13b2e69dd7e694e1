// The HDF5 reader runs libhdf5 in a forked child (see hdf5.h). The parent touches libhdf5 only to
// initialise it, single-threaded (prepare_hdf5); it never hands it a file, so no lock of the
// library is held across fork() by another scanner thread.
#include "aegis/formats/hdf5.h"

#include <fcntl.h>
#include <hdf5.h>
#include <hdf5_hl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstddef>
#include <chrono>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <mutex>
#include <optional>
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

// Records for one file, gathered in memory and sent as one frame: a tag byte, then each field as a
// 32-bit length and its bytes. Past `cap` bytes nothing more is kept and the frame says so.
class RecordWriter {
 public:
  explicit RecordWriter(std::uint64_t cap) : cap_(cap) {}

  void record(char tag, std::initializer_list<std::string_view> fields) {
    std::size_t size = 1;
    for (auto field : fields) size += sizeof(std::uint32_t) + field.size();
    if (buffer_.size() + size > cap_) {
      overflow_ = true;
      return;
    }
    buffer_.push_back(tag);
    for (auto field : fields) {
      std::uint32_t length = static_cast<std::uint32_t>(field.size());
      buffer_.append(reinterpret_cast<const char*>(&length), sizeof length);
      buffer_.append(field);
    }
  }

  bool overflow() const { return overflow_; }
  std::string& bytes() { return buffer_; }

 private:
  std::uint64_t cap_;
  bool overflow_ = false;
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

// Opens one file image and records what it holds. Runs in a worker process only.
void walk_file(std::span<const std::uint8_t> data, const Hdf5Limits& limits, RecordWriter& out) {
  if (H5open() < 0) {
    out.record('E', {"libhdf5 could not be initialised"});
    return;
  }
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5PLset_loading_state(0);  // never load filter plugins named by a file
  // Read-only, and the image is used in place: nothing is copied, nothing written back.
  hid_t file = H5LTopen_file_image(const_cast<std::uint8_t*>(data.data()), data.size(),
                                   H5LT_FILE_IMAGE_DONT_COPY | H5LT_FILE_IMAGE_DONT_RELEASE);
  if (file < 0) {
    out.record('E', {"libhdf5 cannot open the file: the superblock or root group is damaged"});
    return;
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
  if (walk.limit_hit || out.overflow()) out.record('M', {});
  H5Fclose(file);
}

// What the parent asks of a worker; the file itself travels as a descriptor beside it.
struct Request {
  std::uint32_t magic = 0x41483546;  // "F5HA"
  std::uint32_t cpu_seconds = 0;
  std::uint64_t max_objects = 0;
  std::uint64_t max_attributes = 0;
  std::uint64_t max_attribute_bytes = 0;
};

bool write_all(int fd, const void* data, std::size_t size) {
  const char* at = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::send(fd, at, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    at += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// The worker's system-call filter: what reading a mapped image and answering on the socket needs
// (memory, the socket, descriptors it was given, clocks, limits, exit). Anything else — opening
// files, sockets, exec, fork, ptrace — fails with EPERM, so a file that takes over libhdf5 still
// cannot reach outside the worker. Returns false where the kernel refuses the filter.
bool confine_worker() {
#if defined(__x86_64__)
  constexpr std::uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr std::uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
  return false;
#endif
#if defined(__x86_64__) || defined(__aarch64__)
  static constexpr int kAllowed[] = {
      SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_recvmsg, SYS_sendmsg, SYS_recvfrom, SYS_sendto,
      SYS_close, SYS_fstat, SYS_newfstatat, SYS_lseek, SYS_pread64, SYS_mmap, SYS_munmap, SYS_mremap,
      SYS_mprotect, SYS_madvise, SYS_brk, SYS_futex, SYS_getrusage, SYS_prlimit64, SYS_getpid, SYS_gettid,
      SYS_clock_gettime, SYS_gettimeofday, SYS_sched_yield, SYS_rt_sigreturn, SYS_rt_sigprocmask,
      SYS_restart_syscall, SYS_exit, SYS_exit_group,
      // Signal set-up: the sanitizers' runtime needs these when the worker exits or reports.
      SYS_sigaltstack, SYS_rt_sigaction,
#if defined(__x86_64__)
      SYS_getrlimit, SYS_setrlimit,
#endif
  };
  std::vector<sock_filter> filter;
  filter.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
  filter.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0));
  filter.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
  filter.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
  for (int nr : kAllowed) {
    filter.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(nr), 0, 1));
    filter.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  }
  filter.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)));
  sock_fprog program{static_cast<unsigned short>(filter.size()), filter.data()};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
#endif
}

// A worker serves requests until the parent closes its end of the socket. Each request gets its
// own CPU-time allowance (the soft RLIMIT_CPU is moved up by that much before it starts).
[[noreturn]] void worker_main(int sock) {
  // libhdf5 is set up before the filter goes on (it may read its environment and locale then).
  H5open();
  const bool confined = confine_worker();
  for (;;) {
    Request request;
    int fd = -1;
    char control[CMSG_SPACE(sizeof(int))] = {};
    struct iovec iov{&request, sizeof request};
    struct msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(sock, &message, MSG_WAITALL);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof request) || request.magic != Request{}.magic) _exit(0);
    for (auto* c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) std::memcpy(&fd, CMSG_DATA(c), sizeof fd);

    struct rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    struct rlimit cpu{};
    getrlimit(RLIMIT_CPU, &cpu);
    cpu.rlim_cur = static_cast<rlim_t>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + 1 + request.cpu_seconds);
    if (cpu.rlim_max != RLIM_INFINITY && cpu.rlim_cur > cpu.rlim_max) cpu.rlim_cur = cpu.rlim_max;
    setrlimit(RLIMIT_CPU, &cpu);

    Hdf5Limits limits;
    limits.max_objects = request.max_objects;
    limits.max_attributes = request.max_attributes;
    limits.max_attribute_bytes = request.max_attribute_bytes;
    RecordWriter out(request.max_attribute_bytes + (16u << 20));
    struct stat st{};
    void* map = MAP_FAILED;
    if (fd >= 0 && ::fstat(fd, &st) == 0 && st.st_size > 0)
      map = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      out.record('E', {"the HDF5 reader could not map the file"});
    } else {
      walk_file({static_cast<const std::uint8_t*>(map), static_cast<std::size_t>(st.st_size)}, limits, out);
      ::munmap(map, static_cast<std::size_t>(st.st_size));
    }
    if (fd >= 0) ::close(fd);
    out.record('S', {confined ? "seccomp" : "limits-only"});
    out.record('D', {});
    std::uint64_t size = out.bytes().size();
    if (!write_all(sock, &size, sizeof size) || !write_all(sock, out.bytes().data(), out.bytes().size())) _exit(0);
  }
}

struct Worker {
  pid_t pid = -1;
  int sock = -1;
  std::size_t served = 0;
};

// Workers are forked on demand, reused while they stay healthy and retired after a few hundred
// files (so that nothing libhdf5 leaks piles up); the pool keeps as many as threads asked at once.
class WorkerPool {
 public:
  // Workers hold nothing worth flushing: at exit they are killed, never waited on while they wind down.
  ~WorkerPool() {
    std::lock_guard lock(mutex_);
    for (auto& worker : idle_) retire(worker, true);
  }

  std::optional<Worker> acquire(std::string& error) {
    {
      std::lock_guard lock(mutex_);
      if (!idle_.empty()) {
        Worker worker = idle_.back();
        idle_.pop_back();
        return worker;
      }
    }
    return spawn(error);
  }

  void release(Worker worker) {
    if (++worker.served >= kMaxServed) {
      retire(worker, false);
      return;
    }
    std::lock_guard lock(mutex_);
    idle_.push_back(worker);
  }

  // Ends a worker and returns how it ended (waitpid status); `kill_first` for one that misbehaved.
  static int retire(Worker& worker, bool kill_first) {
    if (kill_first) ::kill(worker.pid, SIGKILL);
    ::close(worker.sock);
    int status = 0;
    while (::waitpid(worker.pid, &status, 0) < 0 && errno == EINTR) {
    }
    worker.pid = -1;
    return status;
  }

 private:
  static constexpr std::size_t kMaxServed = 500;

  static std::optional<Worker> spawn(std::string& error) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      error = std::string("cannot create a socket for the HDF5 reader: ") + std::strerror(errno);
      return std::nullopt;
    }
    // Both at once: the child's memory allowance is measured on the parent before the fork.
    std::uint64_t data_limit = current_data_size() + Hdf5Limits{}.memory_bytes;
    pid_t pid = ::fork();
    if (pid < 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      error = std::string("cannot start the HDF5 reader process: ") + std::strerror(errno);
      return std::nullopt;
    }
    if (pid == 0) {
      if (&__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(nullptr);
      // Nothing of the parent's but the socket: other workers' sockets stay with the parent alone.
      int keep = fds[1];
      if (keep > 3) ::close_range(3, static_cast<unsigned>(keep - 1), 0);
      ::close_range(static_cast<unsigned>(keep + 1), ~0u, 0);
      struct rlimit core_limit{0, 0};
      setrlimit(RLIMIT_CORE, &core_limit);
      if (!kAddressSanitizer) {
        struct rlimit current{};
        if (getrlimit(RLIMIT_DATA, &current) == 0 && (current.rlim_max == RLIM_INFINITY || data_limit < current.rlim_max)) {
          struct rlimit limit{static_cast<rlim_t>(data_limit), current.rlim_max};
          setrlimit(RLIMIT_DATA, &limit);
        }
      }
      worker_main(keep);
    }
    ::close(fds[1]);
    return Worker{pid, fds[0], 0};
  }

  static std::uint64_t current_data_size() {
    std::uint64_t used = 0;
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
      if (line.rfind("VmData:", 0) == 0) used = std::strtoull(line.c_str() + 7, nullptr, 10) << 10;
    return used;
  }

  std::mutex mutex_;
  std::vector<Worker> idle_;
};

WorkerPool& pool() {
  static WorkerPool instance;
  return instance;
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
      case 'S':
        if (!in.field(a)) return;
        result.confined = a == "seccomp";
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

void prepare_hdf5() {
  static const bool ready = [] {
    if (H5open() < 0) return false;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    H5PLset_loading_state(0);  // never load filter plugins named by a file
    return true;
  }();
  (void)ready;
}

bool looks_like_hdf5(std::span<const std::uint8_t> data) {
  for (std::size_t at = 0; at + kSignature.size() <= data.size(); at = at ? at * 2 : 512) {
    if (std::memcmp(data.data() + at, kSignature.data(), kSignature.size()) == 0) return true;
    if (at >= (1u << 20)) break;  // user blocks beyond 1 MiB are not worth probing for
  }
  return false;
}

namespace {

// Reads exactly `size` bytes before `deadline`; false on end of stream, error or time out.
bool read_exact(int fd, char* out, std::size_t size, std::chrono::steady_clock::time_point deadline, bool& timed_out) {
  while (size > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      return false;
    }
    struct pollfd pfd{fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) return false;
    if (ready <= 0) continue;
    ssize_t n = ::read(fd, out, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    out += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// A descriptor holding the bytes: the file itself when the caller named it, else a memory file.
int open_image(std::span<const std::uint8_t> data, const std::string& path, std::string& error) {
  if (!path.empty()) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st{};
    if (fd >= 0 && ::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) == data.size()) return fd;
    if (fd >= 0) ::close(fd);  // changed or vanished since it was mapped: send the bytes we have
  }
  int fd = ::memfd_create("aegis-hdf5", MFD_CLOEXEC);
  if (fd < 0) {
    error = std::string("cannot create a memory file for the HDF5 reader: ") + std::strerror(errno);
    return -1;
  }
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = std::string("cannot fill the memory file for the HDF5 reader: ") + std::strerror(errno);
      ::close(fd);
      return -1;
    }
    done += static_cast<std::size_t>(n);
  }
  return fd;
}

bool send_request(const Worker& worker, const Request& request, int fd) {
  char control[CMSG_SPACE(sizeof(int))] = {};
  struct iovec iov{const_cast<Request*>(&request), sizeof request};
  struct msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  auto* c = CMSG_FIRSTHDR(&message);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  for (;;) {
    ssize_t n = ::sendmsg(worker.sock, &message, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    return n == static_cast<ssize_t>(sizeof request);
  }
}

}  // namespace

Hdf5Extract extract_hdf5(std::span<const std::uint8_t> data, const Hdf5Limits& limits, const std::string& path) {
  Hdf5Extract result;
  int fd = open_image(data, path, result.error);
  if (fd < 0) return result;
  Request request;
  request.cpu_seconds = limits.cpu_seconds;
  request.max_objects = limits.max_objects;
  request.max_attributes = limits.max_attributes;
  request.max_attribute_bytes = limits.max_attribute_bytes;

  // A worker that died since its last file fails the send: it is replaced once.
  std::optional<Worker> worker;
  for (int attempt = 0; attempt < 2; ++attempt) {
    worker = pool().acquire(result.error);
    if (!worker) break;
    if (send_request(*worker, request, fd)) break;
    WorkerPool::retire(*worker, true);
    worker.reset();
  }
  ::close(fd);
  if (!worker) {
    if (result.error.empty()) result.error = "the HDF5 reader process could not be reached";
    return result;
  }

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(limits.wall_seconds);
  bool timed_out = false;
  std::uint64_t size = 0;
  std::string bytes;
  bool framed = read_exact(worker->sock, reinterpret_cast<char*>(&size), sizeof size, deadline, timed_out) &&
                size <= limits.max_attribute_bytes + (17u << 20);
  if (framed) {
    bytes.resize(static_cast<std::size_t>(size));
    framed = read_exact(worker->sock, bytes.data(), bytes.size(), deadline, timed_out);
  }
  bool done = false;
  if (framed) decode(bytes, result, done);
  auto note = [&result](const std::string& text) {
    if (!result.error.empty()) result.error += "; ";
    result.error += text;
  };
  if (framed && done) {
    pool().release(*worker);
    return result;
  }
  // Whatever went wrong, this worker is not trusted with another file.
  int status = WorkerPool::retire(*worker, true);
  result.child_died = true;
  if (timed_out) {
    note("libhdf5 took longer than " + std::to_string(limits.wall_seconds) + " s on this file and was stopped");
  } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGXCPU) {
    note("libhdf5 used more than " + std::to_string(limits.cpu_seconds) + " s of CPU on this file");
  } else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL) {
    note("libhdf5 died on this file with " + describe_signal(WTERMSIG(status)));
  } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    note("the HDF5 reader stopped on this file (exit status " + std::to_string(WEXITSTATUS(status)) +
         "; out of memory, or a memory error caught by a sanitizer)");
  } else {
    note("the HDF5 reader stopped on this file without an answer");
  }
  return result;
}

}  // namespace aegis::formats
