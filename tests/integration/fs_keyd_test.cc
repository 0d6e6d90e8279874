// Integration: kmsfs and keyd together — keyd going away and coming back under a mounted
// volume, key state and policy applied per open, several users on one root-run mount, and the
// ways a mount is started (daemonized, mount.kmsfs, mount -t fuse.kmsfs).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>

#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// open(2) of `path`: 0 on success, else errno; and how long it took.
std::pair<int, milliseconds> TimedOpen(const std::string& path, int flags) {
  const auto start = Clock::now();
  const int fd = ::open(path.c_str(), flags, 0644);
  const int err = fd < 0 ? errno : 0;
  if (fd >= 0) ::close(fd);
  return {err, std::chrono::duration_cast<milliseconds>(Clock::now() - start)};
}

Mount::Options WithO(std::vector<std::string> o) {
  Mount::Options m;
  m.o = std::move(o);
  return m;
}

TEST_CASE("keyd killed under a mounted volume: opens fail fast, then work again", "[fs][keyd]") {
  MountedVolume v(WithO({"key_timeout=3"}));
  WriteFile(v.P("before"), "written while keyd was up");
  REQUIRE(::mkdir(v.P("dir").c_str(), 0755) == 0);

  v.keyd->Kill9();
  // keyd is gone: opening needs an unwrap, which fails with EHOSTDOWN ("key service down",
  // docs/errors.md) and quickly — never a hang.
  auto [err, took] = TimedOpen(v.P("before"), O_RDONLY);
  CHECK(err == EHOSTDOWN);
  CHECK(took < milliseconds(10'000));
  auto [cerr, ctook] = TimedOpen(v.P("new-file"), O_CREAT | O_EXCL | O_WRONLY);
  CHECK(cerr == EHOSTDOWN);
  CHECK(ctook < milliseconds(10'000));
  struct stat st;
  CHECK(ErrnoOf(::stat(v.P("new-file").c_str(), &st)) == ENOENT);  // nothing half-created
  // Metadata needs no key: stat, readdir, mkdir, rename keep working.
  CHECK(::stat(v.P("before").c_str(), &st) == 0);
  CHECK(st.st_size == 25);
  CHECK(std::filesystem::exists(v.P("dir")));
  CHECK(::mkdir(v.P("dir2").c_str(), 0755) == 0);

  // keyd back (same state, same socket): the same mount works again by itself.
  v.keyd = v.box.StartKeyd();
  CHECK(ReadFile(v.P("before")) == "written while keyd was up");
  WriteFile(v.P("after"), "and after");
  CHECK(ReadFile(v.P("after")) == "and after");
  CHECK(v.mount->Unmount());
  CheckLog(v.mount->Log(), {"key service", "unreachable", "EHOSTDOWN"});
}

TEST_CASE("keyd hanging: an open fails after key_timeout, never hangs", "[fs][keyd]") {
  MountedVolume v(WithO({"key_timeout=2"}));
  WriteFile(v.P("f"), "data");
  ::kill(v.keyd->pid(), SIGSTOP);
  auto [err, took] = TimedOpen(v.P("f"), O_RDONLY);
  ::kill(v.keyd->pid(), SIGCONT);
  CHECK(err == EHOSTDOWN);
  CHECK(took >= milliseconds(1'500));
  CHECK(took < milliseconds(10'000));
  // The client reconnects on the next call.
  CHECK(ReadFile(v.P("f")) == "data");
  CHECK(v.mount->Unmount());
}

TEST_CASE("unmount is clean even after keyd died", "[fs][keyd]") {
  MountedVolume v;
  WriteFile(v.P("f"), "data");
  const int fd = ::open(v.P("f").c_str(), O_RDONLY);  // a handle (and DEK) open across the death
  REQUIRE(fd >= 0);
  v.keyd->Kill9();
  char buf[8];
  CHECK(::pread(fd, buf, 4, 0) == 4);  // an open handle keeps working: its key is in memory
  ::close(fd);
  CHECK(v.mount->Unmount());
  CHECK(v.mount->exit_code() == 0);
  CHECK_FALSE(IsMounted(v.mountpoint));
}

TEST_CASE("DisableKey applies to the next open, EnableKey restores it", "[fs][keyd]") {
  MountedVolume v;
  WriteFile(v.P("f"), "data");
  REQUIRE(v.box.Ctl({"disable-key", "--key-id", v.key_id}).exit_code == 0);
  CHECK(TimedOpen(v.P("f"), O_RDONLY).first == ENOKEY);
  CHECK(TimedOpen(v.P("g"), O_CREAT | O_WRONLY).first == ENOKEY);
  REQUIRE(v.box.Ctl({"enable-key", "--key-id", v.key_id}).exit_code == 0);
  CHECK(ReadFile(v.P("f")) == "data");
  CHECK(v.mount->Unmount());
}

TEST_CASE("a root-run allow_other mount serves several users", "[fs][keyd][users]") {
  RequireTool("setpriv");
  MountedVolume v(WithO({"allow_other"}));
  // uid 1000 and 1001 may use the key; 1001 may not decrypt anything under /alice.
  const std::string policy = R"({"Version": "2012-10-17", "Statement": [
    {"Sid": "Root", "Effect": "Allow", "Principal": {"Uid": 0}, "Action": "kms:*", "Resource": "*"},
    {"Sid": "Users", "Effect": "Allow", "Principal": {"Uid": [1000, 1001]},
     "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"},
    {"Sid": "NotAlicesFiles", "Effect": "Deny", "Principal": {"Uid": 1001},
     "Action": "kms:Decrypt", "Resource": "*",
     "Condition": {"StringLike": {"kmsfs:Path": "/alice/**"}}}]})";
  auto put = v.box.Ctl({"put-key-policy", "--key-id", v.key_id, "--policy", policy});
  INFO(put.out << put.err);
  REQUIRE(put.exit_code == 0);

  REQUIRE(::mkdir(v.P("alice").c_str(), 0777) == 0);
  REQUIRE(::chmod(v.P("alice").c_str(), 0777) == 0);
  auto as = [&](uid_t uid, const std::string& script) {
    return Run(AsUser(uid, uid, {"sh", "-c", script}));
  };

  // New files belong to their creator.
  auto w = as(1000, "echo hi > " + v.P("alice/note") + " && chmod 0644 " + v.P("alice/note"));
  INFO(w.err);
  REQUIRE(w.exit_code == 0);
  struct stat st;
  REQUIRE(::stat(v.P("alice/note").c_str(), &st) == 0);
  CHECK(st.st_uid == 1000);
  CHECK(st.st_gid == 1000);
  CHECK(as(1000, "mkdir " + v.P("alice/sub")).exit_code == 0);
  REQUIRE(::stat(v.P("alice/sub").c_str(), &st) == 0);
  CHECK(st.st_uid == 1000);
  CHECK(as(1000, "ln -s note " + v.P("alice/ln")).exit_code == 0);
  REQUIRE(::lstat(v.P("alice/ln").c_str(), &st) == 0);
  CHECK(st.st_uid == 1000);

  // The owner reads; the kernel's mode check (default_permissions) applies first...
  CHECK(as(1000, "cat " + v.P("alice/note")).out == "hi\n");
  CHECK(as(1000, "chmod 0600 " + v.P("alice/note")).exit_code == 0);
  auto denied_by_mode = as(1001, "cat " + v.P("alice/note"));
  CHECK(denied_by_mode.exit_code != 0);
  CHECK(denied_by_mode.err.find("Permission denied") != std::string::npos);
  // ...and keyd's policy on top: mode 0644 lets 1001 open, the Deny on /alice/** does not.
  CHECK(as(1000, "chmod 0644 " + v.P("alice/note")).exit_code == 0);
  auto denied_by_policy = as(1001, "cat " + v.P("alice/note"));
  CHECK(denied_by_policy.exit_code != 0);
  CHECK(denied_by_policy.err.find("Permission denied") != std::string::npos);
  // Outside /alice, 1001 reads 1000's files.
  REQUIRE(::mkdir(v.P("pub").c_str(), 0777) == 0);
  REQUIRE(::chmod(v.P("pub").c_str(), 0777) == 0);
  CHECK(as(1000, "echo shared > " + v.P("pub/s") + " && chmod 0644 " + v.P("pub/s")).exit_code ==
        0);
  CHECK(as(1001, "cat " + v.P("pub/s")).out == "shared\n");
  // keyd decides on where a file is now: moved into /alice, it is out of 1001's reach.
  REQUIRE(::rename(v.P("pub/s").c_str(), v.P("alice/moved").c_str()) == 0);
  CHECK(as(1001, "cat " + v.P("alice/moved")).exit_code != 0);
  REQUIRE(::rename(v.P("alice/moved").c_str(), v.P("pub/back").c_str()) == 0);
  CHECK(as(1001, "cat " + v.P("pub/back")).out == "shared\n");

  // setgid directories hand down their group.
  REQUIRE(::mkdir(v.P("team").c_str(), 0777) == 0);
  REQUIRE(::chown(v.P("team").c_str(), 0, 4242) == 0);
  REQUIRE(::chmod(v.P("team").c_str(), 02777) == 0);
  CHECK(as(1000, "echo t > " + v.P("team/file") + " && mkdir " + v.P("team/d")).exit_code == 0);
  REQUIRE(::stat(v.P("team/file").c_str(), &st) == 0);
  CHECK(st.st_uid == 1000);
  CHECK(st.st_gid == 4242);
  REQUIRE(::stat(v.P("team/d").c_str(), &st) == 0);
  CHECK(st.st_gid == 4242);
  CHECK((st.st_mode & S_ISGID) != 0);

  CHECK(v.mount->Unmount());
  CheckLog(v.mount->Log());
}

TEST_CASE("an unprivileged user's own mount (through fusermount3)",
          "[fs][keyd][users][unprivileged]") {
  RequireFuse();
  RequireTool("setpriv");
  struct stat dev;
  if (::stat("/dev/fuse", &dev) != 0 || (dev.st_mode & 0006) != 0006) {
    Skip("/dev/fuse is not open to unprivileged users here (mode " +
         std::to_string(dev.st_mode & 0777) + ")");
  }
  Sandbox box;
  auto keyd = box.StartKeyd();
  const std::string key = CreateKey(box);
  const std::string policy = R"({"Version": "2012-10-17", "Statement": [
    {"Sid": "Root", "Effect": "Allow", "Principal": {"Uid": 0}, "Action": "kms:*", "Resource": "*"},
    {"Sid": "Owner", "Effect": "Allow", "Principal": {"Uid": 1000},
     "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"}]})";
  REQUIRE(box.Ctl({"put-key-policy", "--key-id", key, "--policy", policy}).exit_code == 0);
  for (const char* d : {"cipher", "mnt"}) {
    std::filesystem::create_directories(box.Path(d));
    REQUIRE(::chown(box.Path(d).c_str(), 1000, 1000) == 0);
  }
  auto init = Run(AsUser(
      1000, 1000,
      {KmsfsBinary(), "init", "--key-id", key, "--socket", box.socket_path(), box.Path("cipher")}));
  INFO(init.err);
  REQUIRE(init.exit_code == 0);
  Mount::Options o;
  o.launcher = AsUser(1000, 1000, {});
  Mount m(box, box.Path("cipher"), box.Path("mnt"), o);
  auto w = Run(AsUser(
      1000, 1000,
      {"sh", "-c",
       "echo mine > " + m.Path("f") + " && cat " + m.Path("f") + " && mkdir " + m.Path("d")}));
  INFO(w.err);
  CHECK(w.out == "mine\n");
  struct stat st;
  REQUIRE(::stat((box.Path("cipher")).c_str(), &st) == 0);
  // Not allow_other: root, too, is kept out of a user's mount by the kernel.
  CHECK(ErrnoOf(::stat(m.Path("f").c_str(), &st)) == EACCES);
  CHECK(m.Unmount());
  CheckLog(m.Log());
}

TEST_CASE("kmsfs mount without -f daemonizes after mounting and reports failures", "[fs][cli]") {
  RequireFuse();
  Sandbox box;
  auto keyd = box.StartKeyd();
  const std::string key = CreateKey(box);
  InitVolume(box, key, box.Path("cipher"));
  std::filesystem::create_directories(box.Path("mnt"));
  const std::string mnt = std::filesystem::canonical(box.Path("mnt")).string();

  SECTION("a mount that cannot work fails in the foreground of the caller") {
    auto r = Run(
        {KmsfsBinary(), "mount", "--socket", box.Path("no-such.sock"), box.Path("cipher"), mnt});
    CHECK(r.exit_code == 7);  // key service unavailable
    CHECK(r.err.find("key service") != std::string::npos);
    CHECK_FALSE(IsMounted(mnt));
    auto bad_dir =
        Run({KmsfsBinary(), "mount", "--socket", box.socket_path(), box.Path("nothing"), mnt});
    CHECK(bad_dir.exit_code != 0);
    CHECK_FALSE(IsMounted(mnt));
  }
  SECTION("a good mount returns 0 once mounted, and the daemon serves it") {
    auto r = Run({KmsfsBinary(), "mount", "--socket", box.socket_path(), box.Path("cipher"), mnt});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(IsMounted(mnt));
    WriteFile(mnt + "/x", "daemon");
    CHECK(ReadFile(mnt + "/x") == "daemon");
    CHECK(Run({"fusermount3", "-u", mnt}).exit_code == 0);
    CHECK_FALSE(IsMounted(mnt));
  }
}

TEST_CASE("mount.kmsfs and mount -t fuse.kmsfs (fstab style)", "[fs][cli]") {
  RequireFuse();
  Sandbox box;
  auto keyd = box.StartKeyd();
  const std::string key = CreateKey(box);
  InitVolume(box, key, box.Path("cipher"));
  std::filesystem::create_directories(box.Path("mnt"));
  const std::string mnt = std::filesystem::canonical(box.Path("mnt")).string();
  const std::string helper = std::filesystem::path(KmsfsBinary()).parent_path() / "mount.kmsfs";
  // fstab-only options are accepted and ignored; ours are taken out; the rest goes to FUSE.
  const std::string opts =
      "defaults,nofail,_netdev,x-systemd.automount,noauto,rw,socket=" + box.socket_path() +
      ",key_timeout=5";

  SECTION("mount.kmsfs CIPHERDIR MOUNTPOINT -o ...") {
    auto r = Run({helper, box.Path("cipher"), mnt, "-o", opts});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(IsMounted(mnt));
    WriteFile(mnt + "/via-helper", "h");
    CHECK(ReadFile(mnt + "/via-helper") == "h");
    CHECK(Run({"fusermount3", "-u", mnt}).exit_code == 0);
  }
  SECTION("mount.fuse3 (what mount(8) runs for fuse.* types) runs `kmsfs` from PATH") {
    const std::string mount_fuse3 = RequireTool("mount.fuse3");
    const std::string bin = box.Path("bin");
    std::filesystem::create_directories(bin);
    std::filesystem::create_symlink(KmsfsBinary(), bin + "/kmsfs");
    auto r = Run({"env", "PATH=" + bin + ":/usr/sbin:/usr/bin:/sbin:/bin", mount_fuse3,
                  box.Path("cipher"), mnt, "-t", "fuse.kmsfs", "-o", opts});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(IsMounted(mnt));
    WriteFile(mnt + "/via-mount-fuse3", "m");
    CHECK(ReadFile(mnt + "/via-mount-fuse3") == "m");
    CHECK(Run({"fusermount3", "-u", mnt}).exit_code == 0);
  }
  SECTION("mount -t fuse.kmsfs, with kmsfs where mount(8) looks: its own fixed PATH") {
    // mount(8) runs helpers with PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:...
    // whatever ours is, so the binary must be installed; borrow /usr/local/sbin/kmsfs for the
    // test when nothing is there (removed again below), as root only.
    RequireTool("mount");
    RequireTool("mount.fuse3");
    const std::string installed = "/usr/local/sbin/kmsfs";
    std::error_code ec;
    if (::geteuid() != 0 || std::filesystem::exists(std::filesystem::symlink_status(installed))) {
      WARN("skipping mount(8): not root, or " << installed << " exists already");
      return;
    }
    std::filesystem::create_symlink(KmsfsBinary(), installed, ec);
    if (ec) {
      WARN("skipping mount(8): cannot link " << installed << ": " << ec.message());
      return;
    }
    struct Unlink {
      std::string path;
      ~Unlink() { ::unlink(path.c_str()); }
    } cleanup{installed};
    auto r = Run({"mount", "-t", "fuse.kmsfs", box.Path("cipher"), mnt, "-o", opts});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(IsMounted(mnt));
    WriteFile(mnt + "/via-mount", "m");
    CHECK(ReadFile(mnt + "/via-mount") == "m");
    CHECK(Run({"umount", mnt}).exit_code == 0);
  }
  CHECK_FALSE(IsMounted(mnt));
}

}  // namespace
}  // namespace kmsfs::it
