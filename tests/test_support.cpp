#include "test_support.h"

#include "aegis/models/dataset.h"

#include <fcntl.h>
#include <zlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <stdexcept>

namespace aegis::test {

std::vector<std::uint8_t> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("fixture missing: " + path.string() + " (run tests/fixtures/make_fixtures.py)");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<std::uint8_t> deflate_bytes(const std::vector<std::uint8_t>& data, int window_bits) {
  z_stream stream{};
  if (deflateInit2(&stream, 9, Z_DEFLATED, window_bits, 9, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("zlib deflateInit2 failed");
  std::vector<std::uint8_t> out(deflateBound(&stream, static_cast<uLong>(data.size())) + 64);
  stream.next_in = const_cast<Bytef*>(data.data());
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  int status = deflate(&stream, Z_FINISH);
  deflateEnd(&stream);
  if (status != Z_STREAM_END) throw std::runtime_error("zlib deflate did not finish");
  out.resize(stream.total_out);
  return out;
}

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
}  // namespace

CommandResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text) {
  char out_template[] = "/tmp/aegis-test-out-XXXXXX";
  char err_template[] = "/tmp/aegis-test-err-XXXXXX";
  char in_template[] = "/tmp/aegis-test-in-XXXXXX";
  int out_fd = ::mkstemp(out_template);
  int err_fd = ::mkstemp(err_template);
  int in_fd = ::mkstemp(in_template);
  if (out_fd < 0 || err_fd < 0 || in_fd < 0) throw std::runtime_error("mkstemp failed");
  if (::write(in_fd, stdin_text.data(), stdin_text.size()) != static_cast<ssize_t>(stdin_text.size()))
    throw std::runtime_error("writing the command's standard input failed");
  ::lseek(in_fd, 0, SEEK_SET);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    ::dup2(in_fd, STDIN_FILENO);
    std::vector<char*> argv;
    std::string program = AEGIS_CLI_PATH;
    argv.push_back(program.data());
    std::vector<std::string> copies = args;
    for (auto& a : copies) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(program.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(out_fd);
  ::close(err_fd);
  ::close(in_fd);
  ::unlink(in_template);
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = slurp(out_template);
  result.err = slurp(err_template);
  ::unlink(out_template);
  ::unlink(err_template);
  return result;
}

std::vector<std::uint8_t> pseudo_random_bytes(std::size_t n, std::uint32_t& state) {
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) {
    state = state * 1103515245u + 12345u;
    b = static_cast<std::uint8_t>(state >> 24);
  }
  return out;
}

TempDir::TempDir(const std::string& prefix) {
  std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("cannot create a temporary folder under " + pattern);
  path = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string fashion_mnist_missing() {
  const std::filesystem::path images = std::filesystem::path(models::kFashionMnistDir) / "t10k-images-idx3-ubyte.gz";
  if (std::filesystem::exists(images)) return {};
  return "install the Debian package dataset-fashion-mnist (" + images.string() + " is missing)";
}

}  // namespace aegis::test
