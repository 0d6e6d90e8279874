// Logging: spdlog to stderr or the systemd journal, named loggers, and the redaction rule.
//
// Redaction rule (enforced by review and by integration tests that grep captured logs for test key
// hex): ids (key ids, volume ids, file ids, inode and block numbers) may be logged in hex; key
// bytes, plaintext contents and plaintext file names never. Paths inside a volume are plaintext
// names and are logged only by keyd's audit trail, never by the filesystem's log.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>

namespace kmsfs::log {

enum class Sink { kStderr, kJournal };

struct Options {
  Sink sink = Sink::kStderr;
  spdlog::level::level_enum level = spdlog::level::info;
  std::string program = "kmsfs";  // SYSLOG_IDENTIFIER / prefix
};

// Configures the default logger and the factory for named loggers. Call once from main();
// before that, Get() returns loggers writing to stderr at info level. Thread-safe afterwards.
void Init(const Options& options);

// Sink::kJournal when stderr is connected to the journal ($JOURNAL_STREAM matches), else kStderr.
Sink DetectSink();

// Parses "trace|debug|info|warn|error|off"; returns false on anything else.
bool ParseLevel(std::string_view name, spdlog::level::level_enum* out);

// A named logger ("keyd.server", "fs.fuse", ...), created on first use, sharing the sinks.
std::shared_ptr<spdlog::logger> Get(const std::string& name);

}  // namespace kmsfs::log
