// Hostile backing trees (issue 7, docs/reliability.md §5): a volume is made through a real mount,
// then its backing directory is edited the way an attacker with write access to it could —
// garbage and crafted names (names that decrypt, under the real name key, to "..", ".", "a/b",
// "a\0b"), short, garbage and absurd headers, missing/short/garbage kmsfs.dirid, a hard link
// across directories, a FIFO, a device node, symlink loops, a backing symlink to a directory
// outside the cipher directory — and the volume is mounted and walked (readdir, lstat, stat,
// open+read, readlink) in a child process under a watchdog. It must not crash or hang, never
// leave the backing directory, never show a name that is not a valid file name, fail with an
// errno (EIO for damage) rather than wrong data, log a line for damage, and keep serving the
// healthy files.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/base/bytes.h"
#include "common/crypto/hkdf.h"
#include "common/crypto/siv.h"
#include "common/format/encryption_context.h"
#include "common/format/name_encoding.h"
#include "common/format/volume_config.h"
#include "common/ipc/keyd_client.h"
#include "fs/core/name_codec.h"
#include "fs/keysource/keyd_data_key_source.h"
#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

namespace fsys = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteRaw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// The volume's name key, obtained the way `kmsfs mount` does (keyd Decrypt of NameKeyBlob under
// the volume's name context), and what the test forges with it.
class Forger {
 public:
  Forger(Sandbox& box, const std::string& cipherdir) {
    auto config = format::ParseVolumeConfig(ReadAll(cipherdir + "/kmsfs.conf"));
    REQUIRE(config.ok());
    ipc::KeydClient client(box.socket_path());
    fs::KeydDataKeySource keys(&client);
    auto name_key = keys.Decrypt(config->name_key_blob, format::NameKeyContext(config->volume_id),
                                 fs::Requester{});
    REQUIRE(name_key.ok());
    auto codec = fs::NameCodec::Create(*name_key);
    REQUIRE(codec.ok());
    codec_ = std::move(*codec);
    auto siv_key = crypto::Hkdf(name_key->span(), {}, AsBytes("kmsfs/v1/names"), 64);
    REQUIRE(siv_key.ok());
    auto siv = crypto::Aes256Siv::Create(siv_key->span());
    REQUIRE(siv.ok());
    siv_ = std::make_unique<crypto::Aes256Siv>(std::move(*siv));
  }

  static format::Id128 DirId(const std::string& backing_dir) {
    const std::string raw = ReadAll(backing_dir + "/kmsfs.dirid");
    auto id = format::ParseDirId(AsBytes(raw));
    REQUIRE(id.ok());
    return *id;
  }
  // The backing name of a valid plaintext name in `backing_dir`.
  std::string Name(const std::string& backing_dir, const std::string& plain) {
    auto enc = codec_->EncryptName(DirId(backing_dir), plain);
    REQUIRE(enc.ok());
    REQUIRE(enc->long_content.empty());
    return enc->backing_name;
  }
  // A backing name that authenticates in `backing_dir` but decrypts to anything, even a name
  // the fs must refuse ("..", "a/b", "a\0b"): only a holder of the name key can make one.
  std::string ForgedName(const std::string& backing_dir, const std::string& plain) {
    const format::Id128 dir_id = DirId(backing_dir);
    auto sealed = siv_->Seal({ByteSpan(dir_id)}, AsBytes(plain));
    REQUIRE(sealed.ok());
    return format::EncodeName(*sealed);
  }
  std::string SymlinkTarget(const std::string& target) {
    auto enc = codec_->EncryptSymlink(target);
    REQUIRE(enc.ok());
    return *enc;
  }

 private:
  std::unique_ptr<fs::NameCodec> codec_;
  std::unique_ptr<crypto::Aes256Siv> siv_;
};

// What the walk saw at one path.
// -1: not attempted.
struct Seen {
  int lstat_errno = -1;
  int stat_errno = -1;
  int open_errno = -1;
  int read_errno = -1;
  int readlink_errno = -1;
  mode_t type = 0;
  std::string content;               // of a regular file that read completely
  std::vector<std::string> entries;  // of a directory
  int readdir_errno = 0;
};

// Walks `root` (depth-limited): readdir, lstat, stat, open (O_NONBLOCK, so a FIFO cannot block)
// and read of regular files, readlink of symlinks. Runs in a child process so that a hang is
// caught by a watchdog; reports through a pipe as lines "path\tfield\tvalue".
std::map<std::string, Seen> Walk(const std::string& root, bool& hung) {
  int pfd[2];
  REQUIRE(::pipe(pfd) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pfd[0]);
    FILE* out = ::fdopen(pfd[1], "w");
    auto put = [&](const std::string& rel, const char* field, const std::string& v) {
      std::string clean;
      for (char c : v) clean.push_back(c == '\n' || c == '\t' || c == '\0' ? '?' : c);
      std::fprintf(out, "%s\t%s\t%s\n", rel.c_str(), field, clean.c_str());
    };
    std::vector<std::pair<std::string, int>> todo = {{"", 0}};
    while (!todo.empty()) {
      auto [rel, depth] = todo.back();
      todo.pop_back();
      const std::string path = root + (rel.empty() ? "" : "/" + rel);
      struct stat st;
      if (!rel.empty()) {
        if (::lstat(path.c_str(), &st) != 0) {
          put(rel, "lstat", std::to_string(errno));
          continue;
        }
        put(rel, "lstat", "0");
        put(rel, "type", std::to_string(st.st_mode & S_IFMT));
        put(rel, "stat", ::stat(path.c_str(), &st) == 0 ? "0" : std::to_string(errno));
        ::lstat(path.c_str(), &st);
      } else {
        st.st_mode = S_IFDIR;
      }
      if (S_ISLNK(st.st_mode)) {
        char buf[4096];
        const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
        put(rel, "readlink", n >= 0 ? "0" : std::to_string(errno));
      } else if (S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode)) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
          put(rel, "open", std::to_string(errno));
          continue;
        }
        put(rel, "open", "0");
        std::string data;
        char buf[65536];
        int err = 0;
        for (size_t total = 0; total < (64u << 20);) {
          const ssize_t n = ::read(fd, buf, sizeof buf);
          if (n < 0) {
            err = errno;
            break;
          }
          if (n == 0) break;
          data.append(buf, static_cast<size_t>(n));
          total += static_cast<size_t>(n);
        }
        ::close(fd);
        put(rel, "read", std::to_string(err));
        if (err == 0 && S_ISREG(st.st_mode)) put(rel, "content", data);
      } else if (S_ISDIR(st.st_mode)) {
        std::error_code ec;
        fsys::directory_iterator it(path, ec);
        for (; !ec && it != fsys::directory_iterator(); it.increment(ec)) {
          const std::string name = it->path().filename().string();
          put(rel, "entry", name);
          if (depth < 6) todo.push_back({rel.empty() ? name : rel + "/" + name, depth + 1});
        }
        if (ec) put(rel, "readdir", std::to_string(ec.value()));
      }
    }
    std::fclose(out);
    ::_exit(0);
  }
  ::close(pfd[1]);
  std::string text;
  hung = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      hung = true;
      break;
    }
    pollfd p{pfd[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[65536];
    const ssize_t n = ::read(pfd[0], buf, sizeof buf);
    if (n <= 0) break;  // EOF: the walk is over
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(pfd[0]);
  int status = 0;
  if (hung) ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  std::map<std::string, Seen> seen;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    const size_t t1 = line.find('\t');
    const size_t t2 = line.find('\t', t1 + 1);
    if (t1 == std::string::npos || t2 == std::string::npos) continue;
    const std::string rel = line.substr(0, t1);
    const std::string field = line.substr(t1 + 1, t2 - t1 - 1);
    const std::string v = line.substr(t2 + 1);
    Seen& s = seen[rel];
    if (field == "lstat") s.lstat_errno = std::stoi(v);
    if (field == "stat") s.stat_errno = std::stoi(v);
    if (field == "open") s.open_errno = std::stoi(v);
    if (field == "read") s.read_errno = std::stoi(v);
    if (field == "readlink") s.readlink_errno = std::stoi(v);
    if (field == "readdir") s.readdir_errno = std::stoi(v);
    if (field == "type") s.type = static_cast<mode_t>(std::stoul(v));
    if (field == "content") s.content = v;
    if (field == "entry") s.entries.push_back(v);
  }
  return seen;
}

TEST_CASE("malicious backing trees mount and walk without crash, hang or escape", "[hostile]") {
  RequireFuse();
  if (::geteuid() != 0) Skip("needs root (device nodes in the backing tree)");
  MountedVolume v;
  // Healthy content, and the files and directories the attacks below start from.
  const std::string good = "linked file content";
  WriteFile(v.P("good"), good);
  WriteFile(v.P("healthy"), "healthy file content");
  REQUIRE(::mkdir(v.P("sub").c_str(), 0755) == 0);
  WriteFile(v.P("sub/inner"), "inner content");
  for (const char* d : {"nodirid", "shortdirid", "garbagedirid", "escape", "dirid_is_dir"}) {
    REQUIRE(::mkdir(v.P(d).c_str(), 0755) == 0);
    WriteFile(v.P(std::string(d) + "/file"), "content of " + std::string(d));
  }
  for (const char* f : {"short", "garbage_header", "absurd_size", "inside_meta", "blob_len",
                        "bad_magic", "empty_backing", "tail_cut"}) {
    WriteFile(v.P(f), std::string(10000, 'q'));
  }
  REQUIRE(v.mount->Unmount());

  Forger forge(v.box, v.cipherdir);
  const std::string c = v.cipherdir;
  auto B = [&](const std::string& plain) { return c + "/" + forge.Name(c, plain); };
  const std::string sub = c + "/" + forge.Name(c, "sub");
  const std::string good_backing = B("good");
  const std::string good_bytes = ReadAll(good_backing);

  // Names: garbage, and forged names decrypting to what no file name may be.
  for (const char* g : {"AAAA", "not-base64!", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"}) {
    WriteRaw(c + "/" + g, good_bytes);
  }
  WriteRaw(c + "/kmsfs.longname.AAAA", good_bytes);
  WriteRaw(c + "/kmsfs.longname.AAAA.name", "garbage");
  for (const std::string& bad : {std::string(".."), std::string("."), std::string("a/b"),
                                 std::string("a\0b", 3), std::string("/")}) {
    WriteRaw(c + "/" + forge.ForgedName(c, bad), good_bytes);
  }
  // Headers and sizes.
  fsys::resize_file(B("short"), 100);
  {
    std::string bytes = ReadAll(B("garbage_header"));
    for (size_t i = 0; i < 4096; ++i) bytes[i] = static_cast<char>(i * 7 + 3);
    WriteRaw(B("garbage_header"), bytes);
  }
  fsys::resize_file(B("absurd_size"), uint64_t{1} << 42);  // sparse: claims ~4 TiB
  fsys::resize_file(B("inside_meta"), 4096 + 100);         // ends inside the metadata page
  fsys::resize_file(B("tail_cut"), fsys::file_size(B("tail_cut")) - 1);
  {
    std::string bytes = ReadAll(B("blob_len"));
    bytes[26] = '\xff';
    bytes[27] = '\xff';
    WriteRaw(B("blob_len"), bytes);
    std::string magic = ReadAll(B("bad_magic"));
    magic[0] = 'X';
    WriteRaw(B("bad_magic"), magic);
  }
  fsys::resize_file(B("empty_backing"), 0);
  // Directory ids.
  fsys::remove(B("nodirid") + "/kmsfs.dirid");
  WriteRaw(B("shortdirid") + "/kmsfs.dirid", "short");
  WriteRaw(B("garbagedirid") + "/kmsfs.dirid", std::string(16, '\x5a'));
  fsys::remove(B("dirid_is_dir") + "/kmsfs.dirid");
  fsys::create_directory(B("dirid_is_dir") + "/kmsfs.dirid");
  // A hard link across directories: root's "good" also appears as sub/linked.
  REQUIRE(::link(good_backing.c_str(), (sub + "/" + forge.Name(sub, "linked")).c_str()) == 0);
  // Special files and symlinks with valid names.
  REQUIRE(::mkfifo(B("fifo").c_str(), 0644) == 0);
  REQUIRE(::mknod(B("device").c_str(), S_IFCHR | 0644, makedev(1, 3)) == 0);  // /dev/null
  REQUIRE(::symlink(forge.Name(c, "selfloop").c_str(), B("selfloop").c_str()) == 0);
  REQUIRE(::symlink(forge.SymlinkTarget("loopb").c_str(), B("loopa").c_str()) == 0);
  REQUIRE(::symlink(forge.SymlinkTarget("loopa").c_str(), B("loopb").c_str()) == 0);
  REQUIRE(::symlink("/etc", B("plainlink").c_str()) == 0);
  // "escape": its backing directory moves OUT of the cipher directory and a backing symlink
  // takes its place. Followed, it would serve a perfectly valid directory: the fs must not.
  const std::string outside = v.box.Path("outside");
  fsys::rename(B("escape"), outside);
  REQUIRE(::symlink(outside.c_str(), B("escape").c_str()) == 0);

  Mount m(v.box, v.cipherdir, v.mountpoint);
  bool hung = false;
  auto seen = Walk(v.mountpoint, hung);
  CHECK_FALSE(hung);
  CHECK(m.running());  // no crash

  // What the walk saw, for the log (errno per call; -1 = not attempted).
  for (const auto& [rel, s] : seen) {
    std::printf("hostile: %-16s type %06o lstat %d stat %d open %d read %d readlink %d bytes %zu\n",
                rel.c_str(), static_cast<unsigned>(s.type), s.lstat_errno, s.stat_errno,
                s.open_errno, s.read_errno, s.readlink_errno, s.content.size());
  }
  // Healthy files still read.
  CHECK(seen["healthy"].content == "healthy file content");
  CHECK(seen["sub/inner"].content == "inner content");
  // A hard link made behind kmsfs's back is a file substituted into another directory: either
  // name reads as the file's own content or fails with EIO; never other bytes.
  for (const char* name : {"good", "sub/linked"}) {
    INFO(name);
    const Seen& s = seen[name];
    if (s.open_errno == 0 && s.read_errno == 0) {
      CHECK(s.content == good);
    } else {
      CHECK((s.open_errno == EIO || s.read_errno == EIO || s.lstat_errno == EIO));
    }
  }

  // No listed name is "." / ".." / contains '/' (impossible in readdir output) or is reserved.
  std::set<std::string> root_entries(seen[""].entries.begin(), seen[""].entries.end());
  INFO("root entries: " << root_entries.size());
  for (const auto& [rel, s] : seen) {
    for (const auto& e : s.entries) {
      CHECK(e != "..");
      CHECK(e != ".");
      CHECK(e.find('?') == std::string::npos);  // a NUL/newline would show as '?'
      CHECK_FALSE(e.starts_with("kmsfs."));
    }
  }
  // Exactly the names made through the mount (valid names of damaged files included), none of
  // the garbage or forged ones.
  const std::set<std::string> expected = {
      "good",     "healthy",      "sub",           "nodirid",        "shortdirid",  "garbagedirid",
      "escape",   "dirid_is_dir", "short",         "garbage_header", "absurd_size", "inside_meta",
      "blob_len", "bad_magic",    "empty_backing", "tail_cut",       "fifo",        "device",
      "selfloop", "loopa",        "loopb",         "plainlink"};
  for (const auto& e : root_entries) {
    INFO("unexpected root entry: " << e);
    CHECK(expected.count(e));
  }
  // Damaged regular files: an errno, never content.
  for (const char* f : {"short", "garbage_header", "absurd_size", "inside_meta", "blob_len",
                        "bad_magic", "empty_backing", "tail_cut"}) {
    INFO(f << ": lstat " << seen[f].lstat_errno << " open " << seen[f].open_errno << " read "
           << seen[f].read_errno);
    const Seen& s = seen[f];
    CHECK(s.content.empty());
    CHECK((s.lstat_errno == EIO || s.open_errno == EIO || s.read_errno == EIO));
  }
  // Damaged directory ids: the directory's entries cannot be read as valid files.
  for (const char* d : {"nodirid", "shortdirid", "garbagedirid", "dirid_is_dir"}) {
    INFO(d);
    CHECK(seen[std::string(d) + "/file"].content.empty());
  }
  // The escape: nothing of the outside directory is served.
  CHECK(seen["escape"].type != S_IFDIR);
  CHECK_FALSE(seen.count("escape/file"));
  // Raw backing symlinks ("/etc", itself) have no encrypted target: EIO at lookup or readlink.
  for (const char* name : {"plainlink", "selfloop"}) {
    INFO(name);
    CHECK((seen[name].lstat_errno == EIO || seen[name].readlink_errno == EIO));
  }
  CHECK(seen["loopa"].readlink_errno == 0);  // valid targets; following them loops in the kernel
  CHECK(seen["loopa"].stat_errno == ELOOP);
  // The device node must not open the real device through the mount.
  if (seen["device"].type == S_IFCHR) {
    struct stat st;
    REQUIRE(::lstat(m.Path("device").c_str(), &st) == 0);
    UniqueFd fd(::open(m.Path("device").c_str(), O_RDONLY | O_NONBLOCK));
    INFO("a device node planted in the backing tree opens through the mount");
    CHECK_FALSE(fd.valid());
  }

  // A log line for the damage, and no secret in it.
  const std::string log = m.Log();
  CHECK(log.find("warn") != std::string::npos);
  CheckLog(log, {".*"}, {v.box.root_key_hex()});
  CHECK(m.Unmount());
}

TEST_CASE("a cipher directory whose root kmsfs.dirid or config is damaged fails to mount cleanly",
          "[hostile]") {
  RequireFuse();
  MountedVolume v;
  WriteFile(v.P("a"), "x");
  REQUIRE(v.mount->Unmount());
  const std::string dirid = v.cipherdir + "/kmsfs.dirid";
  const std::string saved = ReadAll(dirid);
  for (const std::string& damage : {std::string("short"), std::string(16, '\0'), std::string()}) {
    fsys::remove(dirid);
    if (!damage.empty()) WriteRaw(dirid, damage);
    Mount::Options o;
    o.wait_ready = false;
    Mount m(v.box, v.cipherdir, v.mountpoint, o);
    // Either the mount is refused (kmsfs exits non-zero) or it serves EIO for the root's
    // entries; it never crashes (exit by signal) or hangs.
    const bool ready = m.WaitReady(std::chrono::milliseconds(20'000));
    if (ready) {
      std::error_code ec;
      std::vector<std::string> names;
      for (fsys::directory_iterator it(v.mountpoint, ec); !ec && it != fsys::directory_iterator();
           it.increment(ec)) {
        names.push_back(it->path().filename().string());
      }
      CHECK(names.empty());
      CHECK(m.Unmount());
    } else {
      m.Unmount();
      INFO("kmsfs log:\n" << m.Log());
      REQUIRE(m.exit_code().has_value());
      CHECK(*m.exit_code() != 0);
      CHECK(*m.exit_code() < 128);  // not killed by a signal
    }
  }
  WriteRaw(dirid, saved);
  // A config that is not JSON: a clean refusal with the corrupt exit code.
  const std::string conf = v.cipherdir + "/kmsfs.conf";
  ::chmod(conf.c_str(), 0600);
  WriteRaw(conf, "{\"Format\": 1, \"VolumeId\": ");
  Mount::Options o;
  o.wait_ready = false;
  Mount m(v.box, v.cipherdir, v.mountpoint, o);
  CHECK_FALSE(m.WaitReady(std::chrono::milliseconds(20'000)));
  m.Unmount();
  REQUIRE(m.exit_code().has_value());
  CHECK(*m.exit_code() == 6);
}

}  // namespace
}  // namespace kmsfs::it
