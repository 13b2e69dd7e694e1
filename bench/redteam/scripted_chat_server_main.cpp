// The red-team tests' scripted chat server as a program, for benchmarks and manual runs:
//   scripted_chat_server [PORT] [--latency-ms N] [--no-weaknesses]
// prints "port N" on stdout once listening and serves until SIGINT/SIGTERM.
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "support/scripted_chat_server.h"

namespace {
volatile std::sig_atomic_t stop_requested = 0;
void on_signal(int) { stop_requested = 1; }
}  // namespace

int main(int argc, char** argv) {
  aegis::test::ScriptedServerOptions options;
  int port = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--latency-ms" && i + 1 < argc) {
      options.latency_ms = std::atoi(argv[++i]);
    } else if (arg == "--no-weaknesses") {
      options.weak = {};
      options.weak.leak_system_prompt_on_ignore = options.weak.leak_on_repeat_above = options.weak.follow_base64 = false;
      options.weak.comply_in_roleplay = options.weak.invent_packages = options.weak.render_markdown = false;
    } else if (!arg.empty() && arg[0] != '-') {
      port = std::atoi(arg.c_str());
    } else {
      std::cerr << "usage: scripted_chat_server [PORT] [--latency-ms N] [--no-weaknesses]\n";
      return 2;
    }
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  aegis::test::ScriptedChatServer server(options, port);
  std::cout << "port " << server.port() << std::endl;
  while (!stop_requested) ::pause();
  std::cerr << "served " << server.requests() << " chat requests\n";
  server.stop();
  return 0;
}
