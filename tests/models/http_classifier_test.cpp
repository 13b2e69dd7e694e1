#include "aegis/models/http_classifier.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aegis/attacks/extraction/model_extraction.h"
#include "aegis/models/dataset.h"
#include "aegis/models/torchscript_classifier.h"
#include "aegis/core/error.h"

extern char** environ;

namespace aegis::models {
namespace {

namespace fs = std::filesystem;

// The closed-form model every server here runs: logits = W x + b, 4 features, 3 classes.
constexpr int kFeatures = 4;
constexpr int kClasses = 3;
constexpr float kWeights[kClasses][kFeatures] = {
    {0.5f, -1.25f, 2.0f, 0.75f}, {-0.3f, 0.8f, -1.1f, 1.6f}, {1.2f, 0.4f, 0.25f, -0.9f}};
constexpr float kBias[kClasses] = {0.1f, -0.2f, 0.05f};
const char* const kApiKey = "s3cret-key-for-tests";

std::vector<float> test_inputs(std::size_t n) {
  std::vector<float> x(n * kFeatures);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i) + 0.3) * 2.0);
  return x;
}

std::vector<double> expected_logits(const std::vector<float>& x) {
  const std::size_t n = x.size() / kFeatures;
  std::vector<double> out(n * kClasses);
  for (std::size_t i = 0; i < n; ++i)
    for (int c = 0; c < kClasses; ++c) {
      double sum = kBias[c];
      for (int j = 0; j < kFeatures; ++j) sum += static_cast<double>(kWeights[c][j]) * x[i * kFeatures + j];
      out[i * kClasses + c] = sum;
    }
  return out;
}

std::vector<double> expected_probabilities(const std::vector<float>& x) {
  std::vector<double> out = expected_logits(x);
  for (std::size_t i = 0; i < out.size(); i += kClasses) {
    double top = out[i], sum = 0;
    for (int c = 1; c < kClasses; ++c) top = std::max(top, out[i + c]);
    for (int c = 0; c < kClasses; ++c) sum += (out[i + c] = std::exp(out[i + c] - top));
    for (int c = 0; c < kClasses; ++c) out[i + c] /= sum;
  }
  return out;
}

void expect_scores_near(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "at " << i;
}

std::vector<float> predict(HttpClassifier& model, const std::vector<float>& x) {
  std::vector<float> scores(x.size() / model.sample_size() * static_cast<std::size_t>(model.num_classes()));
  model.predict(x, scores);
  return scores;
}

// Runs `body` expecting a core::Error; returns it.
template <class Body>
core::Error expect_error(Body&& body) {
  try {
    body();
  } catch (const core::Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected a core::Error";
  return core::Error("none");
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "aegis_http_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

// Runs a program and returns its exit status (stdout and stderr go to `log`).
int run_program(const std::vector<std::string>& argv, const fs::path& log) {
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A server in a child process that prints "listening on PORT" as its first line; terminated and
// reaped when this object goes.
class ServerProcess {
 public:
  ServerProcess(const std::vector<std::string>& argv, fs::path log) : log_(std::move(log)) {
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) throw std::runtime_error("pipe failed");
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[1]);
    posix_spawn_file_actions_addopen(&actions, 2, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    out_ = pipe_fds[0];
    if (rc != 0) pid_ = -1;
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      for (int i = 0; i < 100; ++i) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
          pid_ = -1;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
      }
    }
    if (out_ >= 0) ::close(out_);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Waits for the first line (importing torch takes seconds on a busy machine); "" when it is fine,
  // else what went wrong with the server's stderr.
  std::string wait_ready() {
    if (pid_ <= 0) return "could not start the server";
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    while (line.find('\n') == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "no 'listening on PORT' line in time; stderr: " + read_text(log_);
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char c;
      if (::read(out_, &c, 1) != 1) return "the server exited before listening; stderr: " + read_text(log_);
      line += c;
    }
    const std::string prefix = "listening on ";
    if (line.rfind(prefix, 0) != 0) return "unexpected first line '" + line + "'";
    port_ = std::stoi(line.substr(prefix.size()));
    return {};
  }
  std::string url(const std::string& scheme, const std::string& host, const std::string& path) const {
    return scheme + "://" + host + ":" + std::to_string(port_) + path;
  }
  std::string url(const std::string& path) const { return url("http", "127.0.0.1", path); }

 private:
  fs::path log_;
  pid_t pid_ = -1;
  int out_ = -1;
  int port_ = 0;
};

// A stdlib server that plays the endpoints a real deployment may be: well-behaved ones in several
// API styles, and broken or hostile ones. It runs the same closed-form linear model.
constexpr const char* kScriptedServer = R"PY(
import json, ssl, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

W = [[0.5, -1.25, 2.0, 0.75], [-0.3, 0.8, -1.1, 1.6], [1.2, 0.4, 0.25, -0.9]]
B = [0.1, -0.2, 0.05]
counts = {}
lock = threading.Lock()

def logits(x):
    assert len(x) == 4, x
    return [sum(w * v for w, v in zip(row, x)) + b for row, b in zip(W, B)]

def flatten(x):
    return [v for row in x for v in row]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the header and the body go out as separate writes

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=(), close=False):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length))
        with lock:
            counts[self.path] = counts.get(self.path, 0) + 1
            count = counts[self.path]
        path = self.path
        batch = lambda: json.dumps({"logits": [logits(x) for x in request["inputs"]]})
        if path == "/linear":
            self.reply(200, batch())
        elif path == "/single":
            self.reply(200, json.dumps({"output": {"scores": logits(request["data"]["x"])}}))
        elif path == "/shaped":
            self.reply(200, json.dumps({"predictions": [logits(flatten(x)) for x in request["instances"]]}))
        elif path == "/label":
            out = [max(range(3), key=lambda c: logits(x)[c]) for x in request["inputs"]]
            self.reply(200, json.dumps({"labels": out}))
        elif path == "/close":
            self.reply(200, batch(), close=True)
        elif path == "/drop":
            # keep-alive promised, then the connection dropped (as an idle timeout does)
            self.reply(200, batch())
            self.close_connection = True
        elif path == "/retry-after":
            if count % 2 == 1:
                self.reply(429, '{"error": "slow down"}', headers=[("Retry-After", "0")])
            else:
                self.reply(200, batch())
        elif path == "/deep":
            self.reply(200, '{"logits": ' + "[" * 500 + "]" * 500 + "}")
        elif path == "/big":
            self.reply(200, '{"logits": "' + "a" * 20000 + '"}')
        elif path == "/chunked-big":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"800\r\n" + b"[" * 0x800 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/eof-big":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b" " * 20000)
        elif path == "/inf":
            self.reply(200, '{"logits": [[1e400, 0, 0]]}')
        elif path == "/rows":
            self.reply(200, json.dumps({"logits": [logits(x) for x in request["inputs"]][1:]}))
        elif path == "/columns":
            self.reply(200, json.dumps({"logits": [logits(x)[:2] for x in request["inputs"]]}))
        elif path == "/html":
            self.reply(200, "<html><body>Welcome to nginx</body></html>")
        elif path == "/slow":
            time.sleep(1.5)
            self.reply(200, batch())
        elif path == "/bad-request":
            self.reply(400, '{"detail": "field inputs is required"}')
        else:
            self.reply(404, '{"detail": "not found"}')

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
if len(sys.argv) == 4 and sys.argv[1] == "--tls":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening on %d" % server.server_address[1], flush=True)
server.serve_forever()
)PY";

// Writes the linear model as TorchScript with torch itself.
constexpr const char* kMakeModel = R"PY(
import sys, torch
W = [[0.5, -1.25, 2.0, 0.75], [-0.3, 0.8, -1.1, 1.6], [1.2, 0.4, 0.25, -0.9]]
B = [0.1, -0.2, 0.05]
layer = torch.nn.Linear(4, 3)
with torch.no_grad():
    layer.weight.copy_(torch.tensor(W))
    layer.bias.copy_(torch.tensor(B))
torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), layer)).save(sys.argv[1])
)PY";

// Scores real Fashion-MNIST test images with the demo CNN in torch itself, for comparison.
constexpr const char* kScoreFashionMnist = R"PY(
import gzip, json, sys
import numpy as np, torch
model_path, images_path, out_path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with gzip.open(images_path) as f:
    raw = f.read(16 + n * 784)
images = np.frombuffer(raw, dtype=np.uint8, count=n * 784, offset=16).astype(np.float32) / np.float32(255)
model = torch.jit.load(model_path, map_location="cpu").eval()
with torch.no_grad():
    probabilities = torch.softmax(model(torch.from_numpy(images).reshape(n, 1, 28, 28)).float(), dim=1)
with open(out_path, "w") as f:
    json.dump({"inputs": images.reshape(n, -1).tolist(), "probabilities": probabilities.tolist()}, f)
)PY";

// Prints what GET url answers.
constexpr const char* kHttpGet = R"PY(
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
)PY";

const std::string kPython = "/usr/bin/python3";
const std::string kFashionImages = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
constexpr int kFashionSamples = 8;

class HttpClassifierTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir();
    const fs::path dir = scratch_->path;
    std::ofstream(dir / "scripted_server.py") << kScriptedServer;
    scripted_ = new ServerProcess({kPython, "-u", (dir / "scripted_server.py").string()}, dir / "scripted.log");

    // TLS: a self-signed certificate for the name "localhost" only.
    const int openssl =
        run_program({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-nodes", "-keyout", (dir / "key.pem").string(), "-out", (dir / "cert.pem").string(), "-days",
                     "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"},
                    dir / "openssl.log");
    if (openssl == 0)
      tls_ = new ServerProcess({kPython, "-u", (dir / "scripted_server.py").string(), "--tls",
                                (dir / "cert.pem").string(), (dir / "key.pem").string()},
                               dir / "tls.log");

    const std::string model_server = std::string(AEGIS_SOURCE_DIR) + "/tests/fixtures/model_server.py";
    std::ofstream(dir / "make_model.py") << kMakeModel;
    const std::string model = (dir / "linear.pt").string();
    if (fs::exists(model_server) &&
        run_program({kPython, (dir / "make_model.py").string(), model}, dir / "make_model.log") == 0) {
      const std::vector<std::string> base = {kPython, "-u", model_server, model, "--port", "0", "--shape", "1,4"};
      auto with = [&](std::vector<std::string> extra) {
        std::vector<std::string> argv = base;
        argv.insert(argv.end(), extra.begin(), extra.end());
        return argv;
      };
      model_ = new ServerProcess(base, dir / "model.log");
      flaky_ = new ServerProcess(with({"--fail-every", "3"}), dir / "flaky.log");
      keyed_ = new ServerProcess(with({"--api-key", kApiKey}), dir / "keyed.log");
      const std::string cnn = std::string(AEGIS_SOURCE_DIR) + "/examples/fashion-mnist/model.pt";
      if (fs::exists(cnn) && fs::exists(kFashionImages)) {
        fashion_ = new ServerProcess({kPython, "-u", model_server, cnn, "--port", "0", "--shape", "1,28,28"},
                                     dir / "fashion.log");
        // The reference scores, computed while the servers start.
        std::ofstream(dir / "score_fashion.py") << kScoreFashionMnist;
        if (run_program({kPython, (dir / "score_fashion.py").string(), cnn, kFashionImages,
                         (dir / "fashion.json").string(), std::to_string(kFashionSamples)},
                        dir / "score_fashion.log") != 0)
          fashion_error_ = "scoring Fashion-MNIST with torch failed: " + read_text(dir / "score_fashion.log");
      } else {
        fashion_error_ = "no " + cnn + " or " + kFashionImages;
      }
    } else {
      model_error_ = "no model server: " + model_server + " is missing, or making the TorchScript model failed: " +
                     read_text(dir / "make_model.log");
    }
    scripted_error_ = scripted_->wait_ready();
    if (tls_) tls_error_ = tls_->wait_ready();
    else tls_error_ = "openssl could not make a certificate: " + read_text(dir / "openssl.log");
    if (model_) {
      for (ServerProcess* server : {model_, flaky_, keyed_}) {
        const std::string error = server->wait_ready();
        if (!error.empty() && model_error_.empty()) model_error_ = error;
      }
    }
    if (fashion_ && fashion_error_.empty()) fashion_error_ = fashion_->wait_ready();
  }
  static void TearDownTestSuite() {
    delete fashion_;
    delete keyed_;
    delete flaky_;
    delete model_;
    delete tls_;
    delete scripted_;
    delete scratch_;
    fashion_ = keyed_ = flaky_ = model_ = tls_ = scripted_ = nullptr;
    scratch_ = nullptr;
  }

  static HttpEndpointConfig scripted(const std::string& path) {
    HttpEndpointConfig config = http_config_from_url(scripted_->url(path), {kFeatures});
    config.scores_pointer = "/logits";
    config.scores = ScoreKind::Logits;
    config.num_classes = kClasses;
    config.backoff_ms = 1;
    config.timeout_ms = 5000;
    return config;
  }
  static HttpEndpointConfig model_config(ServerProcess& server) {
    HttpEndpointConfig config = http_config_from_url(server.url("/predict"), {1, kFeatures});
    config.backoff_ms = 1;
    config.timeout_ms = 5000;
    return config;
  }

  static inline ScratchDir* scratch_ = nullptr;
  static inline ServerProcess* scripted_ = nullptr;
  static inline ServerProcess* tls_ = nullptr;
  static inline ServerProcess* model_ = nullptr;
  static inline ServerProcess* flaky_ = nullptr;
  static inline ServerProcess* keyed_ = nullptr;
  static inline ServerProcess* fashion_ = nullptr;
  static inline std::string scripted_error_, tls_error_, model_error_, fashion_error_;

  // What the model server's GET /stats says.
  static nlohmann::json server_stats(ServerProcess& server) {
    const fs::path dir = scratch_->path;
    std::ofstream(dir / "http_get.py") << kHttpGet;
    fs::remove(dir / "stats.json");
    run_program({kPython, (dir / "http_get.py").string(), server.url("/stats")}, dir / "stats.json");
    return nlohmann::json::parse(read_text(dir / "stats.json"), nullptr, false);
  }
};

#define REQUIRE_SERVER(error) \
  if (!(error).empty()) FAIL() << (error)

// --- against the real TorchScript model server ----------------------------------------------------

TEST_F(HttpClassifierTest, ScoresEqualTheTorchScriptModel) {
  REQUIRE_SERVER(model_error_);
  HttpClassifier model(model_config(*model_));  // num_classes discovered by a probe
  EXPECT_EQ(model.num_classes(), kClasses);
  EXPECT_EQ(model.info().backend, "http");
  EXPECT_FALSE(model.has_gradients());
  EXPECT_FALSE(model.decision_only());
  EXPECT_EQ(model.requests_sent(), 1u);
  const auto x = test_inputs(10);
  expect_scores_near(predict(model, x), expected_probabilities(x));
}

TEST_F(HttpClassifierTest, FashionMnistCnnScoresEqualTorch) {
  REQUIRE_SERVER(model_error_);
  if (!fashion_error_.empty()) GTEST_SKIP() << fashion_error_;
  const auto reference = nlohmann::json::parse(read_text(scratch_->path / "fashion.json"));
  std::vector<float> x;
  for (const auto& image : reference["inputs"])
    for (const auto& pixel : image) x.push_back(pixel.get<float>());
  std::vector<double> want;
  for (const auto& row : reference["probabilities"])
    for (const auto& p : row) want.push_back(p.get<double>());
  ASSERT_EQ(x.size(), std::size_t{kFashionSamples} * 784);

  HttpEndpointConfig config = http_config_from_url(fashion_->url("/predict"), {1, 28, 28});
  config.batch_size = 3;
  config.concurrency = 2;
  HttpClassifier model(config);
  EXPECT_EQ(model.num_classes(), 10);
  std::vector<float> scores(kFashionSamples * 10);
  model.predict(x, scores);
  expect_scores_near(scores, want);
}

// Model extraction through the endpoint, as `aegis extract --target http://...` runs it: every query
// is an HTTP request the server counts, and the stolen copy agrees with the served model.
TEST_F(HttpClassifierTest, ExtractionStealsTheServedModelWithinItsBudget) {
  if (!fashion_error_.empty()) GTEST_SKIP() << fashion_error_;
  models::DataOptions pool_options;
  pool_options.split = "train";
  pool_options.limit = 3000;
  const auto pool = models::load_dataset(models::kFashionMnistDir, pool_options);
  models::DataOptions test_options;
  test_options.limit = 500;
  const auto test = models::load_dataset(models::kFashionMnistDir, test_options);

  HttpEndpointConfig config = http_config_from_url(fashion_->url("/predict"), {1, 28, 28});
  config.batch_size = 64;
  config.concurrency = 2;
  HttpClassifier target(config);
  const auto before = server_stats(*fashion_)["samples"].get<std::uint64_t>();
  attacks::ExtractionOptions options;
  options.strategies = {attacks::ExtractionStrategy::Natural};
  options.budgets = {1500};
  options.recipe.epochs = 4;
  options.recipe.batch = 64;
  models::TorchScriptOptions surrogate_options;
  surrogate_options.input_shape = {1, 28, 28};
  const auto report = attacks::run_extraction(target, pool.x, pool.y, test.x, test.y, options, [&] {
    auto m = models::load_torchscript(std::string(AEGIS_SOURCE_DIR) + "/examples/fashion-mnist/model_init.pt",
                                      surrogate_options, options.recipe.optimizer_options());
    m->reinitialize(3);
    return m;
  });
  ASSERT_EQ(report.results.size(), 1u);
  EXPECT_GT(report.target_accuracy, 0.85);
  EXPECT_GT(report.results[0].fidelity, 0.75) << "a copy from 1500 answers agrees with the endpoint";
  // The budget queries plus one pass over the held-out records, each one input the server classified.
  EXPECT_EQ(server_stats(*fashion_)["samples"].get<std::uint64_t>() - before, 1500u + 500u);
  EXPECT_EQ(target.queries(), 1500u + 500u);
}

TEST_F(HttpClassifierTest, BatchingKeepsTheOrder) {
  REQUIRE_SERVER(model_error_);
  HttpEndpointConfig config = model_config(*model_);
  config.num_classes = kClasses;
  config.batch_size = 3;
  config.concurrency = 1;
  HttpClassifier model(config);
  const auto x = test_inputs(10);
  expect_scores_near(predict(model, x), expected_probabilities(x));
  EXPECT_EQ(model.requests_sent(), 4u);  // 3 + 3 + 3 + 1
  EXPECT_EQ(model.retries(), 0u);
  EXPECT_EQ(model.failures(), 0u);
}

TEST_F(HttpClassifierTest, ConcurrentWorkersGiveTheSameScores) {
  REQUIRE_SERVER(model_error_);
  HttpEndpointConfig config = model_config(*model_);
  config.num_classes = kClasses;
  config.batch_size = 3;
  config.concurrency = 4;
  HttpClassifier model(config);
  const auto x = test_inputs(40);
  const auto want = expected_probabilities(x);
  expect_scores_near(predict(model, x), want);
  expect_scores_near(predict(model, x), want);  // again, on the pooled connections
  EXPECT_EQ(model.requests_sent(), 28u);
  EXPECT_EQ(model.preferred_batch(), 12u);
}

TEST_F(HttpClassifierTest, RetriesSurviveAFlakyEndpointAndAreCounted) {
  REQUIRE_SERVER(model_error_);
  HttpEndpointConfig config = model_config(*flaky_);
  config.num_classes = kClasses;
  config.batch_size = 2;
  config.concurrency = 2;
  HttpClassifier model(config);
  const auto x = test_inputs(12);
  expect_scores_near(predict(model, x), expected_probabilities(x));
  EXPECT_GT(model.retries(), 0u);
  EXPECT_EQ(model.failures(), model.retries());
  EXPECT_EQ(model.requests_sent(), 6u + model.retries());
  const HttpStats stats = model.stats();
  EXPECT_EQ(stats.requests, model.requests_sent());
  EXPECT_GE(stats.connections, 1u);
}

TEST_F(HttpClassifierTest, FailingEveryAttemptIsAClearError) {
  REQUIRE_SERVER(model_error_);
  HttpEndpointConfig config = model_config(*flaky_);
  config.num_classes = kClasses;
  config.retries = 0;
  config.batch_size = 1;
  config.concurrency = 1;
  HttpClassifier model(config);
  const auto x = test_inputs(6);  // at least one of six consecutive requests is the third
  const core::Error error = expect_error([&] { predict(model, x); });
  EXPECT_NE(std::string(error.what()).find("503"), std::string::npos) << error.what();
  EXPECT_NE(std::string(error.what()).find(flaky_->url("/predict")), std::string::npos) << error.what();
  EXPECT_NE(error.hint().find("logs"), std::string::npos) << error.hint();
}

TEST_F(HttpClassifierTest, MissingApiKeyIsAClearErrorAndAnEnvironmentReferenceWorks) {
  REQUIRE_SERVER(model_error_);
  HttpEndpointConfig config = model_config(*keyed_);
  config.num_classes = kClasses;
  HttpClassifier anonymous(config);
  const auto x = test_inputs(5);
  const core::Error error = expect_error([&] { predict(anonymous, x); });
  EXPECT_NE(std::string(error.what()).find("401"), std::string::npos) << error.what();
  EXPECT_NE(error.hint().find("Authorization"), std::string::npos) << error.hint();
  EXPECT_EQ(anonymous.requests_sent(), 1u);  // 401 is not retried

  config.headers["Authorization"] = "Bearer ${AEGIS_TEST_ENDPOINT_TOKEN}";
  ::unsetenv("AEGIS_TEST_ENDPOINT_TOKEN");
  const core::Error unset = expect_error([&] { HttpClassifier model(config); });
  EXPECT_NE(std::string(unset.what()).find("AEGIS_TEST_ENDPOINT_TOKEN"), std::string::npos) << unset.what();

  ::setenv("AEGIS_TEST_ENDPOINT_TOKEN", kApiKey, 1);
  HttpClassifier keyed(config);
  ::unsetenv("AEGIS_TEST_ENDPOINT_TOKEN");
  expect_scores_near(predict(keyed, x), expected_probabilities(x));
  EXPECT_EQ(keyed.config().headers.at("Authorization"), "Bearer ${AEGIS_TEST_ENDPOINT_TOKEN}");  // not the secret
}

TEST_F(HttpClassifierTest, AWrongResponsePointerIsAClearError) {
  REQUIRE_SERVER(model_error_);
  HttpEndpointConfig config = model_config(*model_);
  config.num_classes = kClasses;
  config.scores_pointer = "/scores";
  HttpClassifier model(config);
  const core::Error error = expect_error([&] { predict(model, test_inputs(2)); });
  EXPECT_NE(std::string(error.what()).find("'/scores'"), std::string::npos) << error.what();
  EXPECT_NE(std::string(error.what()).find("HTTP 200"), std::string::npos) << error.what();
  EXPECT_NE(std::string(error.what()).find("probabilities"), std::string::npos) << "shows the body: " << error.what();
  EXPECT_NE(error.hint().find("scores_pointer"), std::string::npos) << error.hint();
  EXPECT_EQ(model.requests_sent(), 1u);  // an answer in the wrong shape is not retried

  config.num_classes = 0;  // the discovery probe reports it at construction
  const core::Error probe = expect_error([&] { HttpClassifier discovering(config); });
  EXPECT_NE(std::string(probe.what()).find("'/scores'"), std::string::npos) << probe.what();
}

TEST_F(HttpClassifierTest, QueryCounterCountsSamples) {
  REQUIRE_SERVER(model_error_);
  HttpEndpointConfig config = model_config(*model_);
  config.num_classes = kClasses;
  config.batch_size = 4;
  HttpClassifier model(config);
  const nlohmann::json before = server_stats(*model_);
  predict(model, test_inputs(10));
  predict(model, test_inputs(3));
  EXPECT_EQ(model.queries(), 13u);
  EXPECT_EQ(model.requests_sent(), 4u);
  const nlohmann::json after = server_stats(*model_);
  ASSERT_TRUE(before.contains("samples") && after.contains("samples")) << before << after;
  EXPECT_EQ(after["samples"].get<int>() - before["samples"].get<int>(), 13);  // what the endpoint saw
  EXPECT_EQ(after["requests"].get<int>() - before["requests"].get<int>(), 4);
  model.reset_queries();
  EXPECT_EQ(model.queries(), 0u);
}

// --- API styles, via the scripted server ----------------------------------------------------------

TEST_F(HttpClassifierTest, SingleSamplePlaceholderAndNestedPointer) {
  REQUIRE_SERVER(scripted_error_);
  HttpEndpointConfig config = scripted("/single");
  config.request_template = nlohmann::json::parse(R"({"model": "m1", "data": {"x": "$input", "tags": ["$inputs x"]}})");
  config.scores_pointer = "/output/scores";
  config.batch_size = 8;  // forced to 1 by "$input"
  config.num_classes = 0;
  HttpClassifier model(config);
  EXPECT_EQ(model.num_classes(), kClasses);
  EXPECT_EQ(model.info().scores, ScoreKind::Logits);
  const auto x = test_inputs(5);
  expect_scores_near(predict(model, x), expected_logits(x));
  EXPECT_EQ(model.requests_sent(), 6u);  // probe + one per sample
}

TEST_F(HttpClassifierTest, ShapedPlaceholderNestsTheSample) {
  REQUIRE_SERVER(scripted_error_);
  HttpEndpointConfig config = scripted("/shaped");
  config.input_shape = {2, 2};
  config.request_template = nlohmann::json{{"instances", "$inputs_shaped"}};
  config.scores_pointer = "/predictions";
  HttpClassifier model(config);
  const auto x = test_inputs(7);
  expect_scores_near(predict(model, x), expected_logits(x));
}

TEST_F(HttpClassifierTest, DecisionOnlyEndpointGivesOneHotScores) {
  REQUIRE_SERVER(scripted_error_);
  HttpEndpointConfig config = scripted("/label");
  config.label_pointer = "/labels";
  config.scores = ScoreKind::Logits;  // ignored: labels become probabilities
  HttpClassifier model(config);
  EXPECT_TRUE(model.decision_only());
  EXPECT_EQ(model.info().scores, ScoreKind::Probabilities);
  const auto x = test_inputs(9);
  const auto scores = predict(model, x);
  const auto logits = expected_logits(x);
  for (std::size_t i = 0; i < 9; ++i) {
    int best = 0;
    for (int c = 1; c < kClasses; ++c)
      if (logits[i * kClasses + c] > logits[i * kClasses + best]) best = c;
    for (int c = 0; c < kClasses; ++c) EXPECT_EQ(scores[i * kClasses + c], c == best ? 1.0f : 0.0f);
  }

  config.num_classes = 0;
  EXPECT_THROW(HttpClassifier needs_classes(config), core::Error);
}

TEST_F(HttpClassifierTest, KeepAliveConnectionsAreReusedAndReopenedWhenClosed) {
  REQUIRE_SERVER(scripted_error_);
  HttpEndpointConfig config = scripted("/linear");
  config.batch_size = 1;
  config.concurrency = 1;
  HttpClassifier kept(config);
  const auto x = test_inputs(5);
  expect_scores_near(predict(kept, x), expected_logits(x));
  EXPECT_EQ(kept.stats().connections, 1u);

  HttpClassifier closing(scripted("/close"));
  for (int i = 0; i < 3; ++i) expect_scores_near(predict(closing, x), expected_logits(x));
  EXPECT_EQ(closing.stats().connections, 3u);
  EXPECT_EQ(closing.retries(), 0u);

  // A connection the server dropped without saying so is reopened transparently.
  HttpClassifier dropping(scripted("/drop"));
  for (int i = 0; i < 3; ++i) {
    expect_scores_near(predict(dropping, x), expected_logits(x));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the close arrive first, or not
  }
  EXPECT_EQ(dropping.stats().connections, 3u);
  EXPECT_EQ(dropping.retries(), 0u);
  EXPECT_EQ(dropping.failures(), 0u);
}

TEST_F(HttpClassifierTest, HonoursRetryAfter) {
  REQUIRE_SERVER(scripted_error_);
  HttpClassifier model(scripted("/retry-after"));
  const auto x = test_inputs(3);
  expect_scores_near(predict(model, x), expected_logits(x));
  EXPECT_EQ(model.retries(), 1u);
  EXPECT_EQ(model.failures(), 1u);
}

// --- broken and hostile endpoints -------------------------------------------------------------

TEST_F(HttpClassifierTest, RejectsHostileOrMalformedResponses) {
  REQUIRE_SERVER(scripted_error_);
  const auto x = test_inputs(4);
  struct Case {
    std::string path, expected;
  };
  for (const Case& c : std::vector<Case>{{"/deep", "nested deeper"},
                                         {"/big", "larger than max_response_bytes"},
                                         {"/chunked-big", "larger than max_response_bytes"},
                                         {"/eof-big", "larger than max_response_bytes"},
                                         {"/inf", "not"},  // 1e400: not finite (or not valid JSON)
                                         {"/rows", "list of 4 rows"},
                                         {"/columns", "2 columns"},
                                         {"/html", "not valid JSON"},
                                         {"/bad-request", "HTTP 400"},
                                         {"/nowhere", "HTTP 404"}}) {
    HttpEndpointConfig config = scripted(c.path);
    config.max_response_bytes = 4096;
    HttpClassifier model(config);
    const core::Error error = expect_error([&] { predict(model, x); });
    EXPECT_NE(std::string(error.what()).find(c.expected), std::string::npos) << c.path << ": " << error.what();
    EXPECT_NE(std::string(error.what()).find(scripted_->url(c.path)), std::string::npos) << error.what();
    EXPECT_FALSE(error.hint().empty());
    EXPECT_EQ(model.requests_sent(), 1u) << c.path << " is not worth retrying";
    EXPECT_EQ(model.failures(), 1u);
  }
}

TEST_F(HttpClassifierTest, TimeoutsAreRetriedThenReported) {
  REQUIRE_SERVER(scripted_error_);
  HttpEndpointConfig config = scripted("/slow");
  config.timeout_ms = 200;
  config.retries = 1;
  HttpClassifier model(config);
  const core::Error error = expect_error([&] { predict(model, test_inputs(1)); });
  EXPECT_NE(std::string(error.what()).find("timed out"), std::string::npos) << error.what();
  EXPECT_NE(std::string(error.what()).find("after 2 attempts"), std::string::npos) << error.what();
  EXPECT_NE(error.hint().find("timeout_ms"), std::string::npos) << error.hint();
  EXPECT_EQ(model.requests_sent(), 2u);
  EXPECT_EQ(model.retries(), 1u);
}

TEST_F(HttpClassifierTest, UnreachablePortIsAClearError) {
  // A port that was just free: nothing listens there.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  const int port = ntohs(address.sin_port);
  ::close(fd);

  HttpEndpointConfig config = http_config_from_url("http://127.0.0.1:" + std::to_string(port) + "/predict", {4});
  config.num_classes = 3;
  config.retries = 2;
  config.backoff_ms = 1;
  config.timeout_ms = 2000;
  HttpClassifier model(config);
  const core::Error error = expect_error([&] { predict(model, test_inputs(2)); });
  EXPECT_NE(std::string(error.what()).find("could not connect"), std::string::npos) << error.what();
  EXPECT_NE(std::string(error.what()).find("after 3 attempts"), std::string::npos) << error.what();
  EXPECT_NE(std::string(error.what()).find(std::to_string(port)), std::string::npos) << error.what();
  EXPECT_NE(error.hint().find("running"), std::string::npos) << error.hint();
  EXPECT_EQ(model.retries(), 2u);
  EXPECT_EQ(model.failures(), 3u);
}

TEST_F(HttpClassifierTest, InputsJsonCannotCarryAreRefused) {
  REQUIRE_SERVER(scripted_error_);
  HttpClassifier model(scripted("/linear"));
  auto x = test_inputs(2);
  x[5] = std::nanf("");
  const core::Error error = expect_error([&] { predict(model, x); });
  EXPECT_NE(std::string(error.what()).find("NaN"), std::string::npos) << error.what();
  EXPECT_EQ(model.requests_sent(), 0u);
}

// --- TLS -------------------------------------------------------------------------------------

TEST_F(HttpClassifierTest, TlsVerifiesCertificatesByDefault) {
  REQUIRE_SERVER(tls_error_);
  const auto x = test_inputs(3);
  auto config_for = [&](const std::string& host) {
    HttpEndpointConfig config = scripted("/linear");
    config.url = tls_->url("https", host, "/linear");
    return config;
  };

  // Self-signed: not in the system store.
  HttpClassifier untrusted(config_for("localhost"));
  const core::Error error = expect_error([&] { predict(untrusted, x); });
  EXPECT_NE(std::string(error.what()).find("TLS handshake"), std::string::npos) << error.what();
  EXPECT_NE(error.hint().find("ca_file"), std::string::npos) << error.hint();
  EXPECT_EQ(untrusted.requests_sent(), 1u);  // a certificate failure is not retried

  HttpEndpointConfig trusted_config = config_for("localhost");
  trusted_config.ca_file = (scratch_->path / "cert.pem").string();
  HttpClassifier trusted(trusted_config);
  expect_scores_near(predict(trusted, x), expected_logits(x));
  expect_scores_near(predict(trusted, x), expected_logits(x));
  EXPECT_EQ(trusted.stats().connections, 1u);  // kept alive over TLS

  // Trusted CA but the wrong name: the certificate is for localhost, not 127.0.0.1.
  HttpEndpointConfig wrong_name = config_for("127.0.0.1");
  wrong_name.ca_file = trusted_config.ca_file;
  HttpClassifier mismatched(wrong_name);
  const core::Error name_error = expect_error([&] { predict(mismatched, x); });
  EXPECT_NE(std::string(name_error.what()).find("TLS handshake"), std::string::npos) << name_error.what();

  HttpEndpointConfig insecure = config_for("127.0.0.1");
  insecure.insecure_skip_verify = true;
  HttpClassifier skipping(insecure);
  expect_scores_near(predict(skipping, x), expected_logits(x));
}

// --- config ----------------------------------------------------------------------------------

TEST_F(HttpClassifierTest, LoadsJsonAndYamlConfigs) {
  const fs::path dir = scratch_->path;
  std::ofstream(dir / "endpoint.json") << R"({
    "url": "https://models.example.com:8443/v1/predict?version=2",
    "headers": {"Authorization": "Bearer ${AEGIS_ENDPOINT_TOKEN}"},
    "input_shape": [1, 28, 28],
    "num_classes": 10,
    "request_template": {"instances": "$inputs_shaped", "signature": "serve"},
    "batch_size": 16,
    "scores_pointer": "/predictions",
    "scores": "logits",
    "timeout_ms": 2500,
    "concurrency": 8,
    "retries": 5,
    "max_response_bytes": 1048576,
    "ca_file": "ca.pem"
  })";
  const HttpEndpointConfig json = load_http_config((dir / "endpoint.json").string());
  EXPECT_EQ(json.url, "https://models.example.com:8443/v1/predict?version=2");
  EXPECT_EQ(json.headers.at("Authorization"), "Bearer ${AEGIS_ENDPOINT_TOKEN}");
  EXPECT_EQ(json.input_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(json.num_classes, 10);
  EXPECT_EQ(json.request_template["signature"], "serve");
  EXPECT_EQ(json.batch_size, 16u);
  EXPECT_EQ(json.scores_pointer, "/predictions");
  EXPECT_EQ(json.scores, ScoreKind::Logits);
  EXPECT_EQ(json.timeout_ms, 2500);
  EXPECT_EQ(json.concurrency, 8u);
  EXPECT_EQ(json.retries, 5);
  EXPECT_EQ(json.max_response_bytes, 1048576u);
  EXPECT_EQ(json.ca_file, (dir / "ca.pem").string());
  EXPECT_FALSE(json.insecure_skip_verify);

  std::ofstream(dir / "endpoint.yaml") << R"(# a decision-only API
url: http://127.0.0.1:9/classify
method: PUT
input_shape: [4]
num_classes: 3
request_template:
  data: "$input"
  version: 2
label_pointer: /label
insecure_skip_verify: true
)";
  const HttpEndpointConfig yaml = load_http_config((dir / "endpoint.yaml").string());
  EXPECT_EQ(yaml.method, "PUT");
  EXPECT_EQ(yaml.input_shape, (std::vector<std::int64_t>{4}));
  EXPECT_EQ(yaml.request_template, nlohmann::json::parse(R"({"data": "$input", "version": 2})"));
  EXPECT_EQ(yaml.label_pointer, "/label");
  EXPECT_TRUE(yaml.insecure_skip_verify);
  HttpClassifier decision(yaml);  // no network until the first predict
  EXPECT_TRUE(decision.decision_only());
  EXPECT_EQ(decision.config().batch_size, 1u);

  std::ofstream(dir / "typo.json") << R"({"url": "http://x/", "input_shape": [4], "timeout": 5})";
  const core::Error typo = expect_error([&] { load_http_config((dir / "typo.json").string()); });
  EXPECT_NE(std::string(typo.what()).find("'timeout'"), std::string::npos) << typo.what();
  EXPECT_NE(typo.hint().find("timeout_ms"), std::string::npos) << typo.hint();

  const core::Error missing = expect_error([&] { load_http_config((dir / "absent.yaml").string()); });
  EXPECT_NE(std::string(missing.what()).find("absent.yaml"), std::string::npos) << missing.what();
}

TEST_F(HttpClassifierTest, RejectsBadConfigs) {
  auto base = [] {
    HttpEndpointConfig config = http_config_from_url("http://127.0.0.1:9/predict", {4});
    config.num_classes = 3;
    return config;
  };
  auto fails_with = [](const HttpEndpointConfig& config, const std::string& text) {
    const core::Error error = expect_error([&] { HttpClassifier model(config); });
    EXPECT_NE(std::string(error.what()).find(text), std::string::npos) << error.what();
  };
  HttpEndpointConfig c = base();
  c.request_template = nlohmann::json{{"inputs", "x"}};
  fails_with(c, "exactly one");
  c.request_template = nlohmann::json{{"a", "$inputs"}, {"b", "$input"}};
  fails_with(c, "exactly one");
  c = base();
  c.url = "ftp://127.0.0.1/x";
  fails_with(c, "http or https");
  c.url = "http://user:pw@127.0.0.1/x";
  fails_with(c, "credentials");
  c.url = "http://127.0.0.1:99999/x";
  fails_with(c, "port");
  c = base();
  c.input_shape.clear();
  fails_with(c, "input_shape");
  c = base();
  c.scores_pointer = "probabilities";
  fails_with(c, "JSON pointer");
  c = base();
  c.headers["X-Api-Key"] = "${AEGIS_TEST_SURELY_UNSET_VARIABLE}";
  fails_with(c, "AEGIS_TEST_SURELY_UNSET_VARIABLE");
  c = base();
  c.headers["Bad Header"] = "x";
  fails_with(c, "header name");
}

}  // namespace
}  // namespace aegis::models
