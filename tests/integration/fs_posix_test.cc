// Integration: POSIX operations through a real kmsfs mount, with their error cases.
#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

struct stat Lstat(const std::string& path) {
  struct stat st;
  INFO(path << ": " << std::strerror(errno));
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st;
}

std::set<std::string> List(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

size_t CountBacking(const std::string& dir, std::string_view prefix) {
  size_t n = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.path().filename().string().starts_with(prefix)) ++n;
  }
  return n;
}

TEST_CASE("POSIX operations and their errors through the mount", "[fs][posix]") {
  MountedVolume v;
  const std::string name256(256, 'n');
  const std::string name255(255, 'L');

  SECTION("ENOENT") {
    struct stat st;
    CHECK(ErrnoOf(::stat(v.P("missing").c_str(), &st)) == ENOENT);
    CHECK(ErrnoOf(::open(v.P("missing").c_str(), O_RDONLY)) == ENOENT);
    CHECK(ErrnoOf(::unlink(v.P("missing").c_str())) == ENOENT);
    CHECK(ErrnoOf(::rmdir(v.P("missing").c_str())) == ENOENT);
    CHECK(ErrnoOf(::rename(v.P("missing").c_str(), v.P("x").c_str())) == ENOENT);
    CHECK(ErrnoOf(::open(v.P("nodir/file").c_str(), O_CREAT | O_WRONLY, 0644)) == ENOENT);
  }

  SECTION("EEXIST") {
    REQUIRE(::mkdir(v.P("d").c_str(), 0755) == 0);
    WriteFile(v.P("f"), "x");
    CHECK(ErrnoOf(::mkdir(v.P("d").c_str(), 0755)) == EEXIST);
    CHECK(ErrnoOf(::mkdir(v.P("f").c_str(), 0755)) == EEXIST);
    CHECK(ErrnoOf(::open(v.P("f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == EEXIST);
    CHECK(ErrnoOf(::symlink("t", v.P("f").c_str())) == EEXIST);
    CHECK(ErrnoOf(::link(v.P("f").c_str(), v.P("f").c_str())) == EEXIST);
    CHECK(ErrnoOf(::mknod(v.P("f").c_str(), S_IFIFO | 0644, 0)) == EEXIST);
    // O_CREAT without O_EXCL opens the existing file and keeps its contents.
    const int fd = ::open(v.P("f").c_str(), O_CREAT | O_RDWR, 0644);
    REQUIRE(fd >= 0);
    ::close(fd);
    CHECK(ReadFile(v.P("f")) == "x");
  }

  SECTION("ENOTEMPTY and rmdir") {
    REQUIRE(::mkdir(v.P("d").c_str(), 0755) == 0);
    WriteFile(v.P("d/f"), "x");
    CHECK(ErrnoOf(::rmdir(v.P("d").c_str())) == ENOTEMPTY);
    REQUIRE(::mkdir(v.P("d/sub").c_str(), 0755) == 0);
    REQUIRE(::unlink(v.P("d/f").c_str()) == 0);
    CHECK(ErrnoOf(::rmdir(v.P("d").c_str())) == ENOTEMPTY);
    REQUIRE(::rmdir(v.P("d/sub").c_str()) == 0);
    CHECK(ErrnoOf(::rmdir(v.P("d").c_str())) == 0);
    CHECK(List(v.mountpoint).empty());
    CHECK(ErrnoOf(::rmdir(v.P("f").c_str())) == ENOENT);
    WriteFile(v.P("file"), "x");
    CHECK(ErrnoOf(::rmdir(v.P("file").c_str())) == ENOTDIR);
  }

  SECTION("ENAMETOOLONG for 256-byte names, 255-byte names round-trip") {
    CHECK(ErrnoOf(::open(v.P(name256).c_str(), O_CREAT | O_WRONLY, 0644)) == ENAMETOOLONG);
    CHECK(ErrnoOf(::mkdir(v.P(name256).c_str(), 0755)) == ENAMETOOLONG);
    CHECK(ErrnoOf(::symlink("t", v.P(name256).c_str())) == ENAMETOOLONG);
    WriteFile(v.P("short"), "s");
    CHECK(ErrnoOf(::rename(v.P("short").c_str(), v.P(name256).c_str())) == ENAMETOOLONG);
    CHECK(ErrnoOf(::link(v.P("short").c_str(), v.P(name256).c_str())) == ENAMETOOLONG);

    WriteFile(v.P(name255), "long");
    REQUIRE(::mkdir(v.P("d").c_str(), 0755) == 0);
    REQUIRE(::mkdir(v.P("d/" + name255).c_str(), 0755) == 0);
    CHECK(List(v.mountpoint) == std::set<std::string>{name255, "d", "short"});
    CHECK(ReadFile(v.P(name255)) == "long");
    REQUIRE(::rename(v.P(name255).c_str(), v.P("d/" + name255 + "/" + name255).c_str()) == 0);
    CHECK(ReadFile(v.P("d/" + name255 + "/" + name255)) == "long");
    REQUIRE(::rename(v.P("d/" + name255 + "/" + name255).c_str(), v.P("back").c_str()) == 0);
    REQUIRE(::rename(v.P("back").c_str(), v.P(name255).c_str()) == 0);
    v.Remount();
    CHECK(ReadFile(v.P(name255)) == "long");
    CHECK(List(v.P("d")) == std::set<std::string>{name255});
    REQUIRE(::unlink(v.P(name255).c_str()) == 0);
    REQUIRE(::rmdir(v.P("d/" + name255).c_str()) == 0);
    // Every long-name entry and its side file are gone with the names.
    CHECK(CountBacking(v.cipherdir, "kmsfs.longname.") == 0);
  }

  SECTION("rename: plain, overwrite, cross-directory, NOREPLACE, EXCHANGE, directories, EXDEV") {
    REQUIRE(::mkdir(v.P("a").c_str(), 0755) == 0);
    REQUIRE(::mkdir(v.P("b").c_str(), 0755) == 0);
    WriteFile(v.P("a/one"), "1");
    WriteFile(v.P("a/two"), "2");
    REQUIRE(::rename(v.P("a/one").c_str(), v.P("a/uno").c_str()) == 0);
    CHECK(ReadFile(v.P("a/uno")) == "1");
    REQUIRE(::rename(v.P("a/uno").c_str(), v.P("b/one").c_str()) == 0);
    CHECK(ReadFile(v.P("b/one")) == "1");
    REQUIRE(::rename(v.P("b/one").c_str(), v.P("a/two").c_str()) == 0);  // overwrite
    CHECK(ReadFile(v.P("a/two")) == "1");
    CHECK(List(v.P("b")).empty());

    WriteFile(v.P("b/x"), "x");
    CHECK(ErrnoOf(::renameat2(AT_FDCWD, v.P("a/two").c_str(), AT_FDCWD, v.P("b/x").c_str(),
                              RENAME_NOREPLACE)) == EEXIST);
    CHECK(ErrnoOf(::renameat2(AT_FDCWD, v.P("a/two").c_str(), AT_FDCWD, v.P("b/y").c_str(),
                              RENAME_NOREPLACE)) == 0);
    CHECK(ReadFile(v.P("b/y")) == "1");
    CHECK(ErrnoOf(::renameat2(AT_FDCWD, v.P("b/x").c_str(), AT_FDCWD, v.P("b/y").c_str(),
                              RENAME_EXCHANGE)) == 0);
    CHECK(ReadFile(v.P("b/x")) == "1");
    CHECK(ReadFile(v.P("b/y")) == "x");
    CHECK(ErrnoOf(::renameat2(AT_FDCWD, v.P("b/x").c_str(), AT_FDCWD, v.P("b/none").c_str(),
                              RENAME_EXCHANGE)) == ENOENT);

    // Directories: onto an empty one replaces it, onto a non-empty one is ENOTEMPTY.
    WriteFile(v.P("a/inside"), "i");
    REQUIRE(::mkdir(v.P("empty").c_str(), 0755) == 0);
    REQUIRE(::rename(v.P("a").c_str(), v.P("empty").c_str()) == 0);
    CHECK(ReadFile(v.P("empty/inside")) == "i");
    CHECK(ErrnoOf(::rename(v.P("empty").c_str(), v.P("b").c_str())) == ENOTEMPTY);
    CHECK(ErrnoOf(::rename(v.P("b/x").c_str(), v.P("empty").c_str())) == EISDIR);
    REQUIRE(::rename(v.P("empty").c_str(), v.P("b/moved").c_str()) == 0);
    CHECK(ReadFile(v.P("b/moved/inside")) == "i");
    // Moving a directory keeps its children readable (their names stay under its own dir id).
    v.Remount();
    CHECK(ReadFile(v.P("b/moved/inside")) == "i");
    // Out of the mount: a different file system, as for any mount.
    CHECK(ErrnoOf(::rename(v.P("b/x").c_str(), v.box.Path("outside").c_str())) == EXDEV);
    CHECK(ErrnoOf(::link(v.P("b/x").c_str(), v.box.Path("outside").c_str())) == EXDEV);
  }

  SECTION("hard links share contents and survive each other") {
    WriteFile(v.P("orig"), "shared");
    REQUIRE(::mkdir(v.P("d").c_str(), 0755) == 0);
    REQUIRE(::link(v.P("orig").c_str(), v.P("d/link").c_str()) == 0);
    const struct stat a = Lstat(v.P("orig"));
    const struct stat b = Lstat(v.P("d/link"));
    CHECK(a.st_ino == b.st_ino);
    CHECK(a.st_nlink == 2);
    CHECK(ReadFile(v.P("d/link")) == "shared");
    WriteFile(v.P("d/link"), "changed via the link");
    CHECK(ReadFile(v.P("orig")) == "changed via the link");
    REQUIRE(::unlink(v.P("orig").c_str()) == 0);
    v.Remount();
    CHECK(ReadFile(v.P("d/link")) == "changed via the link");
    CHECK(Lstat(v.P("d/link")).st_nlink == 1);
  }

  SECTION("symlinks: encrypted target, readlink, lstat size, following") {
    WriteFile(v.P("target"), "through the link");
    REQUIRE(::symlink("target", v.P("sl").c_str()) == 0);
    REQUIRE(::symlink("/absolute/dangling/path", v.P("dangling").c_str()) == 0);
    char buf[256];
    ssize_t n = ::readlink(v.P("sl").c_str(), buf, sizeof buf);
    REQUIRE(n == 6);
    CHECK(std::string(buf, 6) == "target");
    CHECK(Lstat(v.P("sl")).st_size == 6);
    CHECK(S_ISLNK(Lstat(v.P("sl")).st_mode));
    CHECK(ReadFile(v.P("sl")) == "through the link");
    n = ::readlink(v.P("dangling").c_str(), buf, sizeof buf);
    CHECK(std::string(buf, static_cast<size_t>(n)) == "/absolute/dangling/path");
    struct stat st;
    CHECK(ErrnoOf(::stat(v.P("dangling").c_str(), &st)) == ENOENT);
  }

  SECTION("chmod, chown, utimens (UTIME_NOW, UTIME_OMIT)") {
    WriteFile(v.P("f"), "x");
    REQUIRE(::chmod(v.P("f").c_str(), 0640) == 0);
    CHECK((Lstat(v.P("f")).st_mode & 07777) == 0640);
    REQUIRE(::chown(v.P("f").c_str(), 1234, 5678) == 0);
    CHECK(Lstat(v.P("f")).st_uid == 1234);
    CHECK(Lstat(v.P("f")).st_gid == 5678);
    struct timespec ts[2] = {{1000000, 5}, {2000000, 7}};
    REQUIRE(::utimensat(AT_FDCWD, v.P("f").c_str(), ts, 0) == 0);
    CHECK(Lstat(v.P("f")).st_atim.tv_sec == 1000000);
    CHECK(Lstat(v.P("f")).st_mtim.tv_sec == 2000000);
    CHECK(Lstat(v.P("f")).st_mtim.tv_nsec == 7);
    struct timespec omit_now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
    REQUIRE(::utimensat(AT_FDCWD, v.P("f").c_str(), omit_now, 0) == 0);
    CHECK(Lstat(v.P("f")).st_atim.tv_sec == 1000000);
    CHECK(Lstat(v.P("f")).st_mtim.tv_sec > 2000000);
    REQUIRE(::mkdir(v.P("d").c_str(), 0700) == 0);
    REQUIRE(::chmod(v.P("d").c_str(), 0751) == 0);
    CHECK((Lstat(v.P("d")).st_mode & 07777) == 0751);
  }

  SECTION("statfs, fsync, fdatasync, fsync of a directory") {
    struct statvfs sv;
    REQUIRE(::statvfs(v.mountpoint.c_str(), &sv) == 0);
    CHECK(sv.f_namemax == 255);
    CHECK(sv.f_blocks > 0);
    const int fd = ::open(v.P("f").c_str(), O_CREAT | O_RDWR, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "data", 4) == 4);
    CHECK(::fsync(fd) == 0);
    CHECK(::fdatasync(fd) == 0);
    ::close(fd);
    const int dfd = ::open(v.mountpoint.c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(dfd >= 0);
    CHECK(::fsync(dfd) == 0);
    ::close(dfd);
  }

  SECTION("mmap: shared writes reach the file, private writes do not") {
    WriteFile(v.P("m"), std::string(3 * 4096 + 100, 'a'));
    const int fd = ::open(v.P("m").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    const size_t len = 3 * 4096 + 100;
    char* shared =
        static_cast<char*>(::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    REQUIRE(shared != MAP_FAILED);
    CHECK(shared[5000] == 'a');
    std::memcpy(shared + 4090, "SHARED-WRITE", 12);  // across a block boundary
    REQUIRE(::msync(shared, len, MS_SYNC) == 0);
    ::munmap(shared, len);
    char* priv =
        static_cast<char*>(::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0));
    REQUIRE(priv != MAP_FAILED);
    CHECK(std::string(priv + 4090, 12) == "SHARED-WRITE");
    std::memcpy(priv, "PRIVATE", 7);
    ::munmap(priv, len);
    ::close(fd);
    v.Remount();
    const std::string back = ReadFile(v.P("m"));
    CHECK(back.substr(4090, 12) == "SHARED-WRITE");
    CHECK(back.substr(0, 7) == "aaaaaaa");
    CHECK(back.size() == len);
  }

  SECTION("O_APPEND from two processes interleaves whole writes, loses none") {
    WriteFile(v.P("log"), "");
    constexpr int kLines = 400;
    constexpr size_t kLen = 100;
    std::vector<pid_t> kids;
    for (char who : {'A', 'B'}) {
      const pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        const int fd = ::open(v.P("log").c_str(), O_WRONLY | O_APPEND);
        if (fd < 0) ::_exit(1);
        std::string line(kLen - 1, who);
        line.push_back('\n');
        for (int i = 0; i < kLines; ++i) {
          if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
            ::_exit(2);
          }
        }
        ::_exit(::close(fd) == 0 ? 0 : 3);
      }
      kids.push_back(pid);
    }
    for (pid_t pid : kids) {
      int status = 0;
      REQUIRE(::waitpid(pid, &status, 0) == pid);
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
    }
    const std::string log = ReadFile(v.P("log"));
    CHECK(log.size() == 2 * kLines * kLen);
    std::map<char, int> count;
    for (size_t i = 0; i + kLen <= log.size(); i += kLen) {
      const std::string line = log.substr(i, kLen);
      const bool whole = line == std::string(kLen - 1, line[0]) + "\n";
      CHECK(whole);
      ++count[line[0]];
    }
    CHECK(count['A'] == kLines);
    CHECK(count['B'] == kLines);
  }

  SECTION("O_TRUNC, O_EXCL, truncate up and down, fallocate") {
    WriteFile(v.P("t"), std::string(10000, 'q'));
    int fd = ::open(v.P("t").c_str(), O_WRONLY | O_TRUNC);
    REQUIRE(fd >= 0);
    CHECK(Lstat(v.P("t")).st_size == 0);
    REQUIRE(::write(fd, "new", 3) == 3);
    ::close(fd);
    CHECK(ReadFile(v.P("t")) == "new");
    fd = ::open(v.P("excl").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    CHECK(fd >= 0);
    ::close(fd);
    CHECK(ErrnoOf(::open(v.P("excl").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600)) == EEXIST);

    REQUIRE(::truncate(v.P("t").c_str(), 9000) == 0);
    CHECK(ReadFile(v.P("t")) == "new" + std::string(8997, '\0'));
    REQUIRE(::truncate(v.P("t").c_str(), 2) == 0);
    CHECK(ReadFile(v.P("t")) == "ne");
    fd = ::open(v.P("t").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 5000) == 0);
    CHECK(Lstat(v.P("t")).st_size == 5000);
    CHECK(::posix_fallocate(fd, 0, 20000) == 0);
    CHECK(Lstat(v.P("t")).st_size == 20000);
    CHECK(::posix_fallocate(fd, 0, 100) == 0);
    CHECK(Lstat(v.P("t")).st_size == 20000);
    CHECK(ErrnoOf(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)) ==
          EOPNOTSUPP);
    ::close(fd);
    CHECK(ReadFile(v.P("t")) == "ne" + std::string(19998, '\0'));
  }

  SECTION("O_WRONLY files still read-modify-write correctly; O_DIRECT is honoured") {
    WriteFile(v.P("w"), std::string(8192, 'a'));
    int fd = ::open(v.P("w").c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, "XY", 2, 4095) == 2);
    ::close(fd);
    const std::string w = ReadFile(v.P("w"));
    CHECK(w.substr(4094, 4) == "aXYa");
    fd = ::open(v.P("w").c_str(), O_RDWR | O_DIRECT);
    REQUIRE(fd >= 0);
    char buf[10];
    REQUIRE(::pread(fd, buf, 3, 4095) == 3);  // unaligned: FUSE direct_io accepts any size
    CHECK(std::string(buf, 3) == "XYa");
    REQUIRE(::pwrite(fd, "D", 1, 1) == 1);
    ::close(fd);
    CHECK(ReadFile(v.P("w")).substr(0, 3) == "aDa");
  }

  SECTION("readdir: d_type and inode numbers agree with lstat; reserved names stay hidden") {
    REQUIRE(::mkdir(v.P("dir").c_str(), 0755) == 0);
    WriteFile(v.P("file"), "f");
    REQUIRE(::symlink("file", v.P("link").c_str()) == 0);
    REQUIRE(::mkfifo(v.P("fifo").c_str(), 0644) == 0);
    REQUIRE(::mknod(v.P("null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
    WriteFile(v.P(name255), "long");
    DIR* d = ::opendir(v.mountpoint.c_str());
    REQUIRE(d != nullptr);
    std::map<std::string, std::pair<ino_t, unsigned char>> seen;
    while (struct dirent* e = ::readdir(d)) seen[e->d_name] = {e->d_ino, e->d_type};
    ::closedir(d);
    CHECK(seen.count(".") == 1);
    CHECK(seen.count("..") == 1);
    seen.erase(".");
    seen.erase("..");
    CHECK(seen.size() == 6);
    const std::map<std::string, unsigned char> types = {{"dir", DT_DIR},  {"file", DT_REG},
                                                        {"link", DT_LNK}, {"fifo", DT_FIFO},
                                                        {"null", DT_CHR}, {name255, DT_REG}};
    for (const auto& [n, t] : types) {
      INFO(n.substr(0, 20));
      REQUIRE(seen.count(n) == 1);
      CHECK(seen[n].second == t);
      CHECK(seen[n].first == Lstat(v.P(n)).st_ino);
    }
    for (const auto& [n, _] : seen) CHECK_FALSE(n.starts_with("kmsfs."));
    CHECK(S_ISCHR(Lstat(v.P("null")).st_mode));
    CHECK(Lstat(v.P("null")).st_rdev == makedev(1, 3));
  }

  SECTION("flock and fcntl locks work (the kernel keeps them locally)") {
    WriteFile(v.P("lk"), "x");
    const int a = ::open(v.P("lk").c_str(), O_RDWR);
    const int b = ::open(v.P("lk").c_str(), O_RDWR);
    REQUIRE(a >= 0);
    REQUIRE(b >= 0);
    CHECK(::flock(a, LOCK_EX | LOCK_NB) == 0);
    CHECK(ErrnoOf(::flock(b, LOCK_EX | LOCK_NB)) == EWOULDBLOCK);
    CHECK(::flock(a, LOCK_UN) == 0);
    CHECK(::flock(b, LOCK_EX | LOCK_NB) == 0);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_len = 10;
    CHECK(::fcntl(a, F_SETLK, &fl) == 0);
    ::close(a);
    ::close(b);
  }

  SECTION("extended attributes: set, get, list, replace, remove, namespaces") {
    WriteFile(v.P("x"), "x");
    const std::string p = v.P("x");
    REQUIRE(::setxattr(p.c_str(), "user.a", "alpha", 5, 0) == 0);
    REQUIRE(::setxattr(p.c_str(), "user.b", "", 0, 0) == 0);
    CHECK(ErrnoOf(::setxattr(p.c_str(), "user.a", "x", 1, XATTR_CREATE)) == EEXIST);
    CHECK(ErrnoOf(::setxattr(p.c_str(), "user.c", "x", 1, XATTR_REPLACE)) == ENODATA);
    char buf[64];
    CHECK(::getxattr(p.c_str(), "user.a", nullptr, 0) == 5);
    CHECK(::getxattr(p.c_str(), "user.a", buf, sizeof buf) == 5);
    CHECK(std::string(buf, 5) == "alpha");
    CHECK(ErrnoOf(static_cast<int>(::getxattr(p.c_str(), "user.a", buf, 2))) == ERANGE);
    CHECK(::getxattr(p.c_str(), "user.b", buf, sizeof buf) == 0);
    CHECK(ErrnoOf(static_cast<int>(::getxattr(p.c_str(), "user.none", buf, sizeof buf))) ==
          ENODATA);
    const ssize_t ln = ::listxattr(p.c_str(), buf, sizeof buf);
    REQUIRE(ln > 0);
    std::set<std::string> names;
    for (ssize_t off = 0; off < ln; off += static_cast<ssize_t>(std::strlen(buf + off)) + 1) {
      names.insert(buf + off);
    }
    CHECK(names == std::set<std::string>{"user.a", "user.b"});
    REQUIRE(::setxattr(p.c_str(), "user.a", "beta", 4, XATTR_REPLACE) == 0);
    v.Remount();
    CHECK(::getxattr(p.c_str(), "user.a", buf, sizeof buf) == 4);
    CHECK(std::string(buf, 4) == "beta");
    REQUIRE(::removexattr(p.c_str(), "user.a") == 0);
    CHECK(ErrnoOf(::removexattr(p.c_str(), "user.a")) == ENODATA);
    CHECK(ErrnoOf(::setxattr(p.c_str(), "system.kmsfs", "x", 1, 0)) == EOPNOTSUPP);
    // Directories carry xattrs too (bound to their dir id).
    REQUIRE(::mkdir(v.P("d").c_str(), 0755) == 0);
    REQUIRE(::setxattr(v.P("d").c_str(), "user.d", "dir", 3, 0) == 0);
    CHECK(::getxattr(v.P("d").c_str(), "user.d", buf, sizeof buf) == 3);
  }

  SECTION("security.capability: the kernel's question before each write is answered ENODATA") {
    // kmsfs remembers a miss per inode (the kernel asks before every write(2)); a setxattr
    // through the mount forgets it. File capabilities cannot be stored: the backing file system
    // rejects the encrypted value (48 bytes is no capability format) with EINVAL.
    const std::string p = v.P("caps");
    WriteFile(p, "one");
    char buf[64];
    CHECK(ErrnoOf(static_cast<int>(::getxattr(p.c_str(), "security.capability", buf,
                                              sizeof buf))) == ENODATA);
    WriteFile(p, "two");
    const unsigned char cap_v2[20] = {0x01, 0x00, 0x00, 0x02, 0x00, 0x04};
    CHECK(ErrnoOf(::setxattr(p.c_str(), "security.capability", cap_v2, sizeof cap_v2, 0)) ==
          EINVAL);
    CHECK(ErrnoOf(static_cast<int>(::getxattr(p.c_str(), "security.capability", buf,
                                              sizeof buf))) == ENODATA);
    REQUIRE(::setxattr(p.c_str(), "user.after", "v", 1, 0) == 0);
    WriteFile(p, "three");
    CHECK(ReadFile(p) == "three");
    CHECK(::getxattr(p.c_str(), "user.after", buf, sizeof buf) == 1);
  }

  CHECK(v.mount->Unmount());
  CheckLog(v.mount->Log());
}

TEST_CASE("large directories list completely across several readdir calls", "[fs][posix]") {
  MountedVolume v;
  REQUIRE(::mkdir(v.P("many").c_str(), 0755) == 0);
  std::set<std::string> want;
  for (int i = 0; i < 600; ++i) {
    const std::string n = "entry-with-a-longish-name-" + std::to_string(i);
    WriteFile(v.P("many/" + n), "");
    want.insert(n);
  }
  CHECK(List(v.P("many")) == want);
  v.Remount();
  CHECK(List(v.P("many")) == want);
  for (const auto& n : want) REQUIRE(::unlink(v.P("many/" + n).c_str()) == 0);
  CHECK(List(v.P("many")).empty());
  CHECK(::rmdir(v.P("many").c_str()) == 0);
  CHECK(v.mount->Unmount());
}

TEST_CASE("concurrent readers and writers on one file and on many", "[fs][posix]") {
  MountedVolume v;
  constexpr int kThreads = 8;
  constexpr size_t kChunk = 64 * 1024 + 17;  // not block aligned
  WriteFile(v.P("shared"), "");
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string mine = std::string(kChunk, static_cast<char>('a' + t));
      // Its own region of a shared file, and its own file.
      const int fd = ::open(v.P("shared").c_str(), O_RDWR);
      const int own = ::open(v.P("own" + std::to_string(t)).c_str(), O_CREAT | O_RDWR, 0644);
      if (fd < 0 || own < 0) {
        ++failures;
        return;
      }
      for (int round = 0; round < 5; ++round) {
        if (::pwrite(fd, mine.data(), mine.size(), static_cast<off_t>(t * kChunk)) !=
                static_cast<ssize_t>(mine.size()) ||
            ::pwrite(own, mine.data(), mine.size(), static_cast<off_t>(round * kChunk)) !=
                static_cast<ssize_t>(mine.size())) {
          ++failures;
        }
        std::string back(kChunk, '\0');
        if (::pread(fd, back.data(), back.size(), static_cast<off_t>(t * kChunk)) !=
                static_cast<ssize_t>(back.size()) ||
            back != mine) {
          ++failures;
        }
      }
      ::close(fd);
      ::close(own);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
  v.Remount();
  const std::string all = ReadFile(v.P("shared"));
  REQUIRE(all.size() == kThreads * kChunk);
  for (int t = 0; t < kThreads; ++t) {
    CHECK(all.substr(t * kChunk, kChunk) == std::string(kChunk, static_cast<char>('a' + t)));
    CHECK(ReadFile(v.P("own" + std::to_string(t))).size() == 5 * kChunk);
  }
  CHECK(v.mount->Unmount());
  CheckLog(v.mount->Log());
}

TEST_CASE("opening and closing leaks no descriptors in kmsfs", "[fs][posix]") {
  MountedVolume v;
  WriteFile(v.P("f"), "data");
  auto fds = [&] {
    std::multiset<std::string> targets;
    for (const auto& e :
         std::filesystem::directory_iterator("/proc/" + std::to_string(v.mount->pid()) + "/fd")) {
      std::error_code ec;
      targets.insert(std::filesystem::read_symlink(e.path(), ec).string());
    }
    return targets;
  };
  CHECK(ReadFile(v.P("f")) == "data");
  // RELEASE is asynchronous (close(2) does not wait for it): let the last one land.
  ::usleep(300'000);
  const auto before = fds();
  for (int i = 0; i < 300; ++i) {
    const int fd = ::open(v.P("f").c_str(), i % 2 ? O_RDONLY : O_RDWR);
    REQUIRE(fd >= 0);
    ::close(fd);
    DIR* d = ::opendir(v.mountpoint.c_str());
    REQUIRE(d != nullptr);
    while (::readdir(d) != nullptr) {
    }
    ::closedir(d);
  }
  auto after = fds();
  for (int i = 0; i < 40 && after != before; ++i) {
    ::usleep(50'000);
    after = fds();
  }
  std::string b, a;
  for (const auto& t : before) b += t + " ";
  for (const auto& t : after) a += t + " ";
  INFO("before: " << b << "\nafter: " << a);
  CHECK(after == before);
  CHECK(v.mount->Unmount());
}

}  // namespace
}  // namespace kmsfs::it
