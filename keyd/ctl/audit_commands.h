// kmsctl's commands that are not one request each: `kmsctl audit list|tail|verify|checkpoint|
// export|prune` (paging, polling, checkpoint files, exit codes of a verification) and
// `kmsctl test-access` (the policy simulator, whose exit code is the decision).
#pragma once

#include <memory>
#include <string>

#include "keyd/ctl/output.h"

namespace CLI {
class App;
}

namespace kmsfs::ctl {

// Exit codes of these commands beyond the common ones (main.cc's footer lists them all).
inline constexpr int kExitDenied = 4;        // test-access: the policy denies (as AccessDenied)
inline constexpr int kExitVerifyFailed = 9;  // audit verify: the chain is broken

class AuditCommands {
 public:
  // Registers the subcommands on `app`, which must outlive this object.
  explicit AuditCommands(CLI::App& app);
  ~AuditCommands();
  AuditCommands(const AuditCommands&) = delete;
  AuditCommands& operator=(const AuditCommands&) = delete;

  // True when the parsed command line chose one of these commands.
  bool Parsed() const;
  // Runs the chosen command against keyd at `socket_path`; returns the process exit code.
  int Run(const std::string& socket_path, OutputFormat format);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace kmsfs::ctl
