// main() of kmsfs-keyd-noaudit-bench (bench/CMakeLists.txt): the bench-only keyd whose audit
// library drops key-use records. It serves Decrypt with no audit, so before handing argv to
// keyd/main.cc (compiled with its main renamed to kmsfs_keyd_unguarded_main) it refuses every
// way it could end up serving real keys by accident:
//   - a copied binary started with keyd's defaults (/var/lib/kmsfs, /run/kmsfs/keyd.sock):
//     --state-dir and --socket must each be given exactly once, explicitly;
//   - pointed at a real state: the state dir must already hold the marker file KMSFS-BENCH-ONLY
//     (bench/keyd_audit.sh creates it in its throw-away dir), and must not be /var/lib/kmsfs;
//   - dropped into a unit: socket activation (LISTEN_FDS/LISTEN_PID) and the default socket
//     path (or anything in /run/kmsfs) are refused;
//   - offline maintenance subcommands are refused (they belong to the shipped kmsfs-keyd).
// Exit code 2 (usage) with one line saying why.
#include <limits.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

int kmsfs_keyd_unguarded_main(int argc, char** argv);  // keyd/main.cc's main, renamed

namespace {

constexpr char kMarker[] = "KMSFS-BENCH-ONLY";
constexpr char kDefaultStateDir[] = "/var/lib/kmsfs";
constexpr char kDefaultSocketDir[] = "/run/kmsfs";

int Refuse(const std::string& why) {
  std::fprintf(stderr,
               "kmsfs-keyd-noaudit-bench: refusing to start: %s. This is a BENCHMARK build that "
               "DISCARDS key-use audit records; it only runs inside bench/keyd_audit.sh's "
               "throw-away state (docs/audit.md, Performance). Use kmsfs-keyd.\n",
               why.c_str());
  return 2;
}

// Every value of `--name V` / `--name=V` in argv (CLI11 accepts both; keyd keeps the last).
std::vector<std::string> Values(int argc, char** argv, std::string_view name) {
  std::vector<std::string> out;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == name) {
      out.emplace_back(i + 1 < argc ? argv[i + 1] : "");
    } else if (a.size() > name.size() && a.substr(0, name.size()) == name &&
               a[name.size()] == '=') {
      out.emplace_back(a.substr(name.size() + 1));
    }
  }
  return out;
}

// The canonical path, or nullopt when it does not resolve (e.g. does not exist).
std::optional<std::string> Real(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return std::nullopt;
  return std::string(buf);
}

// Whether `path` names `fixed`, textually or after resolving symlinks, "..", "//".
bool SamePlace(const std::string& path, const char* fixed) {
  if (path == fixed) return true;
  const auto a = Real(path);
  const auto b = Real(fixed);
  return a && (*a == fixed || (b && *a == *b));
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
                    std::strcmp(argv[1], "--version") == 0)) {
    std::printf(
        "kmsfs-keyd-noaudit-bench: BENCHMARK ONLY, key-use audit records are discarded.\n"
        "Starts only with --state-dir DIR (holding the file %s) and --socket PATH (not in %s),\n"
        "never socket-activated, never for maintenance commands. Below: kmsfs-keyd's own help.\n\n",
        kMarker, kDefaultSocketDir);
    std::fflush(stdout);
    return kmsfs_keyd_unguarded_main(argc, argv);
  }
  if (argc >= 2 && argv[1][0] != '-') {
    return Refuse(std::string("'") + argv[1] + "' is not served by this build (no subcommands)");
  }
  for (const char* var : {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}) {
    if (std::getenv(var) != nullptr) {
      return Refuse(std::string(var) + " is set: socket activation is refused");
    }
  }
  const std::vector<std::string> state = Values(argc, argv, "--state-dir");
  if (state.size() != 1 || state[0].empty()) {
    return Refuse("give --state-dir DIR exactly once (the default " +
                  std::string(kDefaultStateDir) + " is never used)");
  }
  const std::vector<std::string> socket = Values(argc, argv, "--socket");
  if (socket.size() != 1 || socket[0].empty()) {
    return Refuse("give --socket PATH exactly once (the default socket is never used)");
  }
  if (SamePlace(state[0], kDefaultStateDir)) {
    return Refuse("--state-dir is keyd's default state " + std::string(kDefaultStateDir));
  }
  if (SamePlace(Dirname(socket[0]), kDefaultSocketDir)) {
    return Refuse("--socket " + socket[0] + " is in keyd's default socket directory " +
                  kDefaultSocketDir);
  }
  const std::string marker = state[0] + "/" + kMarker;
  struct stat st;
  if (::lstat(marker.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Refuse(marker + " is not a regular file (bench/keyd_audit.sh creates it in a fresh "
                           "state dir; never create it in a real one)");
  }
  std::fprintf(stderr,
               "kmsfs-keyd-noaudit-bench: BENCHMARK BUILD: key-use audit records are DISCARDED "
               "(state %s, socket %s)\n",
               state[0].c_str(), socket[0].c_str());
  return kmsfs_keyd_unguarded_main(argc, argv);
}
