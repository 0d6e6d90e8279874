#include "tests/integration/fs_harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/ipc/deadline.h"

extern char** environ;

namespace kmsfs::it {
namespace {

using std::chrono::milliseconds;

std::atomic<int> g_serial{0};

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs a short helper (fusermount3) without REQUIREs: used from destructors, which must not
// throw. Returns the exit code, or -1.
int RunQuiet(const std::vector<std::string>& argv) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo.
std::string UnescapeMountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 &&
          std::all_of(oct.begin(), oct.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out.push_back(static_cast<char>(std::stoi(oct, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// Reads [0, size) of `fd` in chunks, skipping holes (SEEK_DATA), calling `fn` on each chunk
// with enough overlap that a needle across a chunk boundary is still found.
template <class Fn>
void ForEachChunk(int fd, size_t overlap, Fn&& fn) {
  std::string buf;
  off_t pos = 0;
  for (;;) {
    const off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) return;  // ENXIO: no more data
    off_t end = ::lseek(fd, data, SEEK_HOLE);
    if (end < 0) return;
    off_t at = data > static_cast<off_t>(overlap) ? data - static_cast<off_t>(overlap) : 0;
    while (at < end) {
      const size_t want = static_cast<size_t>(std::min<off_t>(end - at, 1 << 20));
      buf.resize(want);
      const ssize_t n = ::pread(fd, buf.data(), want, at);
      if (n <= 0) return;
      buf.resize(static_cast<size_t>(n));
      fn(buf);
      if (at + n >= end) break;
      at += n - static_cast<off_t>(std::min<size_t>(overlap, static_cast<size_t>(n)));
    }
    pos = end;
  }
}

}  // namespace

std::string KmsfsBinary() {
  // KMSFS_TEST_KMSFS_BIN runs the same tests against another build of kmsfs (a sanitizer one).
  const char* other = std::getenv("KMSFS_TEST_KMSFS_BIN");
  return other != nullptr && *other != '\0' ? other : KMSFS_FS_BIN;
}

void RequireFuse() {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) Skip("/dev/fuse is not available");
  RequireTool("fusermount3");
}

bool IsMounted(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mp;
    fields >> id >> parent >> devno >> root >> mp;
    if (UnescapeMountinfo(mp) == mountpoint) return true;
  }
  return false;
}

std::string CreateKey(Sandbox& box) {
  auto r = box.Ctl({"create-key", "--description", "kmsfs integration test"});
  INFO("kmsctl: " << r.out << r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.json.is_object());
  return r.json["KeyMetadata"]["KeyId"].get<std::string>();
}

std::string InitVolume(Sandbox& box, const std::string& key_id, const std::string& cipherdir) {
  std::filesystem::create_directories(cipherdir);
  auto r =
      Run({KmsfsBinary(), "init", "--key-id", key_id, "--socket", box.socket_path(), cipherdir});
  INFO("kmsfs init: " << r.out << r.err);
  REQUIRE(r.exit_code == 0);
  std::string id = r.out;
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  REQUIRE(id.size() == 32);
  return id;
}

Mount::Mount(Sandbox& box, const std::string& cipherdir, const std::string& mountpoint,
             Options options) {
  std::filesystem::create_directories(mountpoint);
  mountpoint_ = std::filesystem::canonical(mountpoint).string();
  const std::string tag = std::to_string(++g_serial);
  log_path_ = box.Path("kmsfs-" + tag + ".log");
  const std::string notify_path = box.Path("kmsfs-notify-" + tag + ".sock");
  notify_fd_ = UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  REQUIRE(notify_fd_.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(notify_path.size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, notify_path.c_str(), notify_path.size() + 1);
  REQUIRE(::bind(notify_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  // A kmsfs run as another user (launcher) must be able to send to it.
  REQUIRE(::chmod(notify_path.c_str(), 0666) == 0);

  std::vector<std::string> argv = options.launcher;
  for (const auto& a : {KmsfsBinary(), std::string("mount"), std::string("-f"),
                        std::string("--socket"), box.socket_path()}) {
    argv.push_back(a);
  }
  for (const auto& o : options.o) {
    argv.push_back("-o");
    argv.push_back(o);
  }
  for (const auto& a : options.args) argv.push_back(a);
  argv.push_back(cipherdir);
  argv.push_back(mountpoint_);
  std::vector<std::string> env = {"NOTIFY_SOCKET=" + notify_path};
  for (const auto& e : options.env) env.push_back(e);
  child_ = std::make_unique<Child>(argv, env, log_path_);
  if (options.wait_ready) {
    const bool ready = WaitReady(options.ready_timeout);
    INFO("kmsfs log:\n" << Log());
    REQUIRE(ready);
  }
}

Mount::~Mount() { (void)Unmount(); }

bool Mount::WaitReady(milliseconds timeout) {
  const auto deadline = ipc::Deadline::After(timeout);
  std::string got;
  for (;;) {
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(notify_fd_.get(), buf, sizeof buf, MSG_DONTWAIT)) > 0) {
      got.append(buf, static_cast<size_t>(n));
      got.push_back('\n');
    }
    if (got.find("READY=1") != std::string::npos) return IsMounted(mountpoint_);
    if (!child_->running() || deadline.Expired()) return false;
    pollfd p{notify_fd_.get(), POLLIN, 0};
    ::poll(&p, 1, std::min(100, std::max(1, deadline.PollTimeoutMs())));
  }
}

bool Mount::Unmount(milliseconds timeout) {
  if (unmounted_) return exit_code_ == 0 && !IsMounted(mountpoint_);
  unmounted_ = true;
  if (!child_) return false;
  // A failed unmount is checked by the caller, who cannot see why: say it on stderr (CTest
  // prints it with the failure) with the end of kmsfs's log (a sanitizer report lands there).
  auto failed = [&](const std::string& why) {
    const std::string log = Log();
    const size_t from = log.size() > 6000 ? log.size() - 6000 : 0;
    std::fprintf(stderr, "kmsfs unmount of %s failed: %s; end of its log %s:\n%s\n",
                 mountpoint_.c_str(), why.c_str(), log_path_.c_str(), log.substr(from).c_str());
    return false;
  };
  std::string fusermount;
  if (IsMounted(mountpoint_)) {
    const int rc = RunQuiet({"fusermount3", "-u", mountpoint_});  // never throws (destructor)
    if (rc != 0) fusermount = "fusermount3 -u exited " + std::to_string(rc) + "; ";
  }
  exit_code_ = child_->WaitExit(timeout);
  if (!exit_code_) {
    // Unmount refused (busy) or kmsfs wedged: stop it the hard way, then detach the mount.
    child_->Signal(SIGTERM);
    exit_code_ = child_->WaitExit(milliseconds(5'000));
    if (!exit_code_) {
      child_->Signal(SIGKILL);
      exit_code_ = child_->WaitExit(milliseconds(5'000));
    }
    if (IsMounted(mountpoint_)) RunQuiet({"fusermount3", "-uz", mountpoint_});
    return failed(fusermount + "kmsfs did not exit within " + std::to_string(timeout.count()) +
                  " ms");
  }
  if (IsMounted(mountpoint_)) {
    RunQuiet({"fusermount3", "-uz", mountpoint_});
    return failed(fusermount + "still mounted after kmsfs exited");
  }
  if (*exit_code_ != 0) return failed(fusermount + "kmsfs exited " + std::to_string(*exit_code_));
  return true;
}

std::string Mount::Log() const { return ReadText(log_path_); }

MountedVolume::MountedVolume(Mount::Options options) {
  RequireFuse();
  keyd = box.StartKeyd();
  key_id = CreateKey(box);
  cipherdir = box.Path("cipher");
  mountpoint = box.Path("mnt");
  volume_id = InitVolume(box, key_id, cipherdir);
  mount = std::make_unique<Mount>(box, cipherdir, mountpoint, std::move(options));
}

void MountedVolume::Remount(Mount::Options options) {
  const bool clean = mount->Unmount();
  INFO("kmsfs log:\n" << mount->Log());
  CHECK(clean);
  CHECK_FALSE(IsMounted(mount->mountpoint()));
  mount.reset();
  mount = std::make_unique<Mount>(box, cipherdir, mountpoint, std::move(options));
}

std::vector<std::string> TreeContains(const std::string& dir,
                                      const std::vector<std::string>& needles) {
  std::set<std::string> found;
  size_t longest = 1;
  for (const auto& n : needles) longest = std::max(longest, n.size());
  auto scan = [&](std::string_view hay) {
    for (const auto& n : needles) {
      if (!n.empty() && hay.find(n) != std::string_view::npos) found.insert(n);
    }
  };
  for (auto it = std::filesystem::recursive_directory_iterator(dir);
       it != std::filesystem::recursive_directory_iterator(); ++it) {
    const auto& p = it->path();
    scan(p.filename().string());
    const auto st = it->symlink_status();
    if (std::filesystem::is_symlink(st)) {
      scan(std::filesystem::read_symlink(p).string());
      continue;
    }
    // Extended attribute values too (names are stored in clear by design).
    const std::string ps = p.string();
    std::string names(65536, '\0');
    const ssize_t nl = ::llistxattr(ps.c_str(), names.data(), names.size());
    for (ssize_t off = 0; nl > 0 && off < nl;) {
      const std::string name(names.data() + off);
      std::string value(65536, '\0');
      const ssize_t vl = ::lgetxattr(ps.c_str(), name.c_str(), value.data(), value.size());
      if (vl > 0) scan(std::string_view(value.data(), static_cast<size_t>(vl)));
      off += static_cast<ssize_t>(name.size()) + 1;
    }
    if (!std::filesystem::is_regular_file(st)) continue;
    UniqueFd fd(::open(ps.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    REQUIRE(fd.valid());
    ForEachChunk(fd.get(), longest - 1, [&](const std::string& chunk) { scan(chunk); });
  }
  return {found.begin(), found.end()};
}

void WriteFile(const std::string& path, const std::string& data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  INFO("open " << path << ": " << std::strerror(errno));
  REQUIRE(fd.valid());
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    REQUIRE(n > 0);
    done += static_cast<size_t>(n);
  }
  REQUIRE(::close(fd.Release()) == 0);
}

std::string ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  INFO("open " << path << ": " << std::strerror(errno));
  REQUIRE(fd.valid());
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    REQUIRE(n >= 0);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

int ErrnoOf(int rc) { return rc >= 0 ? 0 : errno; }

std::set<std::string> BackingEntries(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (!n.starts_with("kmsfs.")) out.insert(e.path().string());
  }
  return out;
}

std::string Locate(const std::string& backing_dir, const std::function<void()>& make) {
  const auto before = BackingEntries(backing_dir);
  make();
  std::vector<std::string> fresh;
  for (const auto& p : BackingEntries(backing_dir)) {
    if (!before.count(p)) fresh.push_back(p);
  }
  REQUIRE(fresh.size() == 1);
  return fresh[0];
}

std::string ReadRaw(const std::string& path, uint64_t off, size_t len) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  std::string out(len, '\0');
  REQUIRE(::pread(fd, out.data(), len, static_cast<off_t>(off)) == static_cast<ssize_t>(len));
  ::close(fd);
  return out;
}

void WriteRaw(const std::string& path, uint64_t off, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(off)) ==
          static_cast<ssize_t>(bytes.size()));
  REQUIRE(::fsync(fd) == 0);
  ::close(fd);
}

void FlipByte(const std::string& path, uint64_t off, uint8_t mask) {
  std::string b = ReadRaw(path, off, 1);
  b[0] = static_cast<char>(static_cast<uint8_t>(b[0]) ^ mask);
  WriteRaw(path, off, b);
}

void Swap(const std::string& path, uint64_t a, uint64_t b, size_t len) {
  const std::string x = ReadRaw(path, a, len);
  const std::string y = ReadRaw(path, b, len);
  WriteRaw(path, a, y);
  WriteRaw(path, b, x);
}

}  // namespace kmsfs::it
