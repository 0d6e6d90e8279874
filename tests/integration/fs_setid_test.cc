// Integration: set-id bits through a real mount. kmsfs negotiates FUSE_HANDLE_KILLPRIV_V2
// (fs/fuse/kill_priv.h), so clearing them on write, truncate and O_TRUNC open is kmsfs's job, not
// the kernel's; each case runs in a real child process, as root without CAP_FSETID or as uid
// 1000, and the mode is read back at once (the kernel's cached attributes must not lag); an
// exec right after such a write runs without the bit.
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

constexpr uid_t kUid = 1000;

enum class Actor { kRoot, kRootWithoutFsetid, kUser };

const char* NameOf(Actor a) {
  switch (a) {
    case Actor::kRoot: return "root";
    case Actor::kRootWithoutFsetid: return "root without CAP_FSETID";
    case Actor::kUser: return "uid 1000";
  }
  return "?";
}

// Drops CAP_FSETID from this process's effective, permitted and inheritable sets.
bool DropFsetid() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2];
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  const uint32_t bit = 1u << CAP_FSETID;
  data[0].effective &= ~bit;
  data[0].permitted &= ~bit;
  data[0].inheritable &= ~bit;
  return ::syscall(SYS_capset, &header, data) == 0;
}

// Runs `op` in a child process as `actor`; its result (0 or an errno).
int RunAs(Actor actor, const std::function<int()>& op) {
  const int err = InChild([&] {
    if (actor == Actor::kRootWithoutFsetid && !DropFsetid()) return 1000 + errno;
    if (actor == Actor::kUser && !BecomeUser(kUid, kUid)) return 1000 + errno;
    return op();
  });
  REQUIRE(err < 1000);  // the child could take the actor's identity
  return err;
}

int OpenDo(const std::string& path, int flags, const std::function<int(int)>& then) {
  const int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) return errno;
  int err = then(fd);
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

int WriteAt(int fd, const char* data, size_t n, off_t off) {
  return ::pwrite(fd, data, n, off) == static_cast<ssize_t>(n) ? 0 : errno;
}

struct Op {
  const char* name;
  std::function<int(const std::string&)> run;
};

const Op kOps[] = {
    {"write", [](const std::string& p) {
       return OpenDo(p, O_WRONLY, [](int fd) { return WriteAt(fd, "new!", 4, 0); });
     }},
    {"O_APPEND write", [](const std::string& p) {
       return OpenDo(p, O_WRONLY | O_APPEND, [](int fd) {
         return ::write(fd, "more", 4) == 4 ? 0 : errno;
       });
     }},
    {"O_DIRECT write", [](const std::string& p) {
       return OpenDo(p, O_WRONLY | O_DIRECT, [](int fd) {
         void* buf = nullptr;
         if (::posix_memalign(&buf, 4096, 4096) != 0) return ENOMEM;
         std::memset(buf, 'd', 4096);
         const int err = WriteAt(fd, static_cast<const char*>(buf), 4096, 0);
         std::free(buf);
         return err;
       });
     }},
    {"O_TRUNC open, nothing written",
     [](const std::string& p) { return OpenDo(p, O_WRONLY | O_TRUNC, [](int) { return 0; }); }},
    // The kernel knows the file, so it sends OPEN; CREATE that finds the file there (a race)
    // carries the same flag: unit_fs "kill_priv: ...".
    {"O_CREAT|O_TRUNC open of the existing file", [](const std::string& p) {
       return OpenDo(p, O_WRONLY | O_CREAT | O_TRUNC, [](int) { return 0; });
     }},
    {"truncate(path)",
     [](const std::string& p) { return ::truncate(p.c_str(), 3) == 0 ? 0 : errno; }},
    {"ftruncate", [](const std::string& p) {
       return OpenDo(p, O_WRONLY, [](int fd) { return ::ftruncate(fd, 9000) == 0 ? 0 : errno; });
     }},
    {"fallocate", [](const std::string& p) {
       return OpenDo(p, O_WRONLY,
                     [](int fd) { return ::fallocate(fd, 0, 0, 20000) == 0 ? 0 : errno; });
     }},
};

mode_t ModeOf(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

Mount::Options AllowOther() {
  Mount::Options o;
  o.o = {"allow_other"};
  return o;
}

// Root does everything; uid 1000 may use the key for its files.
const char* kPolicy = R"({"Version": "2012-10-17", "Statement": [
  {"Sid": "Root", "Effect": "Allow", "Principal": {"Uid": 0}, "Action": "kms:*", "Resource": "*"},
  {"Sid": "User", "Effect": "Allow", "Principal": {"Uid": 1000},
   "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"}]})";

TEST_CASE("set-id bits: cleared on write and truncate by callers without CAP_FSETID",
          "[fs][posix][setid]") {
  MountedVolume v(AllowOther());
  REQUIRE(v.box.Ctl({"put-key-policy", "--key-id", v.key_id, "--policy", kPolicy}).exit_code == 0);
  REQUIRE(::chmod(v.mountpoint.c_str(), 0777) == 0);

  struct Case {
    mode_t before;
    Actor actor;
    mode_t after;
  };
  const Case cases[] = {
      // Linux: set-user-id always goes; set-group-id goes when the group may execute.
      {06775, Actor::kRootWithoutFsetid, 0775},
      {06775, Actor::kUser, 0775},
      {04755, Actor::kUser, 0755},
      // Set-group-id without group execute is a locking mark, not a privilege: it stays.
      {02765, Actor::kUser, 02765},
      // CAP_FSETID keeps them.
      {06775, Actor::kRoot, 06775},
  };
  int n = 0;
  for (const Op& op : kOps) {
    for (const Case& c : cases) {
      const std::string path = v.P("f" + std::to_string(n++));
      WriteFile(path, std::string(5000, 'x'));
      REQUIRE(::chown(path.c_str(), kUid, kUid) == 0);
      REQUIRE(::chmod(path.c_str(), c.before) == 0);
      REQUIRE(ModeOf(path) == c.before);
      INFO(op.name << " by " << NameOf(c.actor) << " on " << std::oct << c.before);
      REQUIRE(RunAs(c.actor, [&] { return op.run(path); }) == 0);
      // Read back at once: no wait for the kernel's attribute timeout.
      CHECK(ModeOf(path) == c.after);
    }
  }
}

TEST_CASE("set-id bits: the data written beside the change is intact, chown clears them too",
          "[fs][posix][setid]") {
  MountedVolume v(AllowOther());
  REQUIRE(v.box.Ctl({"put-key-policy", "--key-id", v.key_id, "--policy", kPolicy}).exit_code == 0);
  REQUIRE(::chmod(v.mountpoint.c_str(), 0777) == 0);
  {
    const std::string path = v.P("data");
    WriteFile(path, "0123456789");
    REQUIRE(::chown(path.c_str(), kUid, kUid) == 0);
    REQUIRE(::chmod(path.c_str(), 04755) == 0);
    REQUIRE(RunAs(Actor::kUser, [&] {
              return OpenDo(path, O_WRONLY, [](int fd) { return WriteAt(fd, "AB", 2, 4); });
            }) == 0);
    CHECK(ModeOf(path) == 0755);
    CHECK(ReadFile(path) == "0123AB6789");
    // The next write, with nothing left to clear, changes nothing else.
    REQUIRE(RunAs(Actor::kUser, [&] {
              return OpenDo(path, O_WRONLY, [](int fd) { return WriteAt(fd, "C", 1, 0); });
            }) == 0);
    CHECK(ModeOf(path) == 0755);
    CHECK(ReadFile(path) == "C123AB6789");
  }

  {  // chown clears them, as on any Linux file system
    const std::string path = v.P("owned");
    WriteFile(path, "x");
    REQUIRE(::chmod(path.c_str(), 06775) == 0);
    REQUIRE(::chown(path.c_str(), kUid, kUid) == 0);
    CHECK(ModeOf(path) == 0775);
  }
}

TEST_CASE("set-id bits: the cleared mode shows at once, to exec and to stat",
          "[fs][posix][setid]") {
  // The kernel keeps its cached mode until the attribute timeout; a write does not always make
  // it look again, so kmsfs tells it (kill_priv.h). Without that, the stat below sees 6775 (the
  // exec passes either way: its permission check fetches fresh attributes by itself).
  Mount::Options o = AllowOther();
  o.o.push_back("suid");
  o.args = {"--log-level", "debug"};
  MountedVolume v(o);
  REQUIRE(v.box.Ctl({"put-key-policy", "--key-id", v.key_id, "--policy", kPolicy}).exit_code == 0);
  REQUIRE(::chmod(v.mountpoint.c_str(), 0777) == 0);
  const std::string id = v.P("id");
  WriteFile(id, ReadFile("/usr/bin/id"));
  REQUIRE(::chmod(id.c_str(), 04777) == 0);  // root's, set-user-id, and anyone may write it

  // Set-user-id works on this mount: the program runs as root for uid 1000.
  auto before = Run(AsUser(kUid, kUid, {id, "-u"}));
  INFO(before.err);
  REQUIRE(before.out == "0\n");

  // uid 1000 rewrites the first byte (the same value: the program still runs) and at once
  // executes it, with no stat in between.
  auto after = Run(AsUser(kUid, kUid, {"sh", "-c",
      "printf '\\177' | dd of=" + id + " bs=1 count=1 conv=notrunc status=none && " + id + " -u"}));
  INFO(after.err);
  CHECK(after.exit_code == 0);
  CHECK(after.out == "1000\n");
  CHECK(ModeOf(id) == 0777);

  // stat(1) right after an append sees the new mode too (with the mode cached just before).
  const std::string f = v.P("appended");
  WriteFile(f, "hello\n");
  REQUIRE(::chown(f.c_str(), kUid, kUid) == 0);
  REQUIRE(::chmod(f.c_str(), 06775) == 0);
  REQUIRE(Run({"stat", "-c", "%a", f}).out == "6775\n");
  REQUIRE(Run(AsUser(kUid, kUid, {"sh", "-c", "echo hi >> " + f})).exit_code == 0);
  CHECK(Run({"stat", "-c", "%a", f}).out == "775\n");

  // And it was kmsfs that cleared the bit, under FUSE_HANDLE_KILLPRIV_V2.
  CHECK(v.mount->Log().find("FUSE_HANDLE_KILLPRIV_V2") != std::string::npos);
}

}  // namespace
}  // namespace kmsfs::it
