#include "common/log/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace kmsfs::log {
namespace {

std::mutex g_mu;
std::vector<spdlog::sink_ptr> g_sinks;  // GUARDED_BY(g_mu)
spdlog::level::level_enum g_level = spdlog::level::info;  // GUARDED_BY(g_mu)

std::vector<spdlog::sink_ptr>& SinksLocked() {
  if (g_sinks.empty()) g_sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  return g_sinks;
}

}  // namespace

Sink DetectSink() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (js == nullptr) return Sink::kStderr;
  struct stat st;
  if (::fstat(2, &st) != 0) return Sink::kStderr;
  unsigned long dev = 0, ino = 0;
  if (std::sscanf(js, "%lu:%lu", &dev, &ino) != 2) return Sink::kStderr;
  return (st.st_dev == dev && st.st_ino == ino) ? Sink::kJournal : Sink::kStderr;
}

bool ParseLevel(std::string_view name, spdlog::level::level_enum* out) {
  static constexpr std::pair<std::string_view, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
      {"error", spdlog::level::err},   {"off", spdlog::level::off}};
  for (const auto& [n, l] : kLevels) {
    if (n == name) {
      *out = l;
      return true;
    }
  }
  return false;
}

void Init(const Options& options) {
  std::lock_guard lock(g_mu);
  g_sinks.clear();
  if (options.sink == Sink::kJournal) {
    g_sinks.push_back(std::make_shared<spdlog::sinks::systemd_sink_mt>(options.program));
  } else {
    g_sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  }
  g_level = options.level;
  auto def = std::make_shared<spdlog::logger>(options.program, g_sinks.begin(), g_sinks.end());
  def->set_level(g_level);
  // The journal stamps time and identifier itself; stderr gets both.
  if (options.sink == Sink::kJournal) {
    def->set_pattern("[%n] %v");
  } else {
    def->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  }
  spdlog::drop_all();
  spdlog::set_default_logger(def);
  spdlog::set_level(g_level);
  spdlog::flush_on(spdlog::level::warn);
}

std::shared_ptr<spdlog::logger> Get(const std::string& name) {
  std::lock_guard lock(g_mu);
  if (auto existing = spdlog::get(name)) return existing;
  auto& sinks = SinksLocked();
  auto logger = std::make_shared<spdlog::logger>(name, sinks.begin(), sinks.end());
  logger->set_level(g_level);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  spdlog::register_logger(logger);
  return logger;
}

}  // namespace kmsfs::log
