#include "keyd/server/peer_identity.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "common/base/unique_fd.h"
#include "common/ipc/peer_cred.h"

namespace kmsfs::keyd {
namespace {

// /proc/PID/cgroup is a few lines; a longer one is not something to parse.
constexpr size_t kMaxCgroupText = 16 * 1024;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool IsUnitName(std::string_view c) { return EndsWith(c, ".service") || EndsWith(c, ".scope"); }

std::vector<std::string_view> Components(std::string_view path) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (end > start) out.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string UnitFromPath(std::string_view path) {
  const auto parts = Components(path);
  const auto first = std::find_if(parts.begin(), parts.end(), IsUnitName);
  if (first == parts.end()) return "";
  const std::string_view unit = *first;
  if (unit.substr(0, 5) == "user@" && EndsWith(unit, ".service")) {
    const auto inner = std::find_if(parts.rbegin(), parts.rend(), IsUnitName);
    if (inner != parts.rend() && &*inner != &*first) {
      return std::string(unit) + "/" + std::string(*inner);
    }
  }
  return std::string(unit);
}

int PidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

// True if the pidfd's process has not exited (a pidfd polls readable once it has).
bool StillAlive(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, 0);
  } while (r < 0 && errno == EINTR);
  return r == 0;
}

// The unit of `pid`, "" if unknown. Same pid-reuse guard as ipc::ExecutableOf: the pidfd is opened
// first and the process must still be alive after the read.
std::string UnitOf(pid_t pid) {
  UniqueFd pidfd(PidfdOpen(pid));
  if (!pidfd.valid() && errno != ENOSYS) return "";
  const std::string file = "/proc/" + std::to_string(pid) + "/cgroup";
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return "";
  std::string text(kMaxCgroupText, '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return "";
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  if (pidfd.valid() && !StillAlive(pidfd.get())) return "";
  return UnitFromCgroup(text);
}

}  // namespace

std::string UnitFromCgroup(std::string_view text) {
  std::string_view v1_path;
  bool have_v1 = false;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    start = end + 1;
    // "hierarchy-id:controllers:path"; the path may itself contain ':'.
    const size_t c1 = line.find(':');
    if (c1 == std::string_view::npos) continue;
    const size_t c2 = line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) continue;
    const std::string_view id = line.substr(0, c1);
    const std::string_view controllers = line.substr(c1 + 1, c2 - c1 - 1);
    const std::string_view path = line.substr(c2 + 1);
    if (id == "0" && controllers.empty()) {
      std::string unit = UnitFromPath(path);
      if (!unit.empty()) return unit;
    } else if (controllers == "name=systemd" && !have_v1) {
      v1_path = path;
      have_v1 = true;
    }
  }
  return have_v1 ? UnitFromPath(v1_path) : "";
}

Principal DescribeProcess(uid_t uid, gid_t gid, pid_t pid) {
  Principal p;
  p.uid = uid;
  p.gid = gid;
  p.pid = pid;
  if (pid <= 0) return p;
  if (auto exe = ipc::ExecutableOf(pid); exe.ok()) p.executable = std::move(exe).value();
  p.unit = UnitOf(pid);
  return p;
}

bool IsTrustedForwarder(uid_t uid, std::span<const uid_t> trusted_uids) {
  return uid == 0 || std::find(trusted_uids.begin(), trusted_uids.end(), uid) != trusted_uids.end();
}

CallerContext BuildCallerContext(const Principal& peer,
                                 const std::optional<ipc::OnBehalfOf>& on_behalf_of,
                                 bool peer_trusted, const ProcessDescriber& describe) {
  CallerContext ctx;
  ctx.peer = peer;
  if (!on_behalf_of) return ctx;
  if (!peer_trusted) {
    ctx.forwarded_ignored = true;
    return ctx;
  }
  ctx.on_behalf = describe(on_behalf_of->uid, on_behalf_of->gid, on_behalf_of->pid);
  ctx.path = on_behalf_of->path;
  return ctx;
}

}  // namespace kmsfs::keyd
