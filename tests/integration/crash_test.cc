// Crash consistency (issue 7, docs/reliability.md §2): a child process runs a seeded mixed
// workload (create, write at random offsets, append, truncate, fsync, rename, unlink) against a
// real kmsfs mount over a real keyd; at a random moment kmsfs (and in some cycles kmsfs-keyd) is
// SIGKILLed; the dead mount is detached, everything is restarted and remounted, and every file is
// checked against the model of what was acknowledged:
//   - a file fsync'ed and not modified since reads back exactly as fsync'ed;
//   - a file modified after its last fsync has a size that it had at some moment since that fsync,
//     and each 4 KiB block reads as that block of some state the file had since that fsync (never
//     bytes it never held) or, only for blocks written since that fsync, EIO;
//   - completed creates, renames and unlinks are visible; nothing else appears;
//   - keyd's state survives: keys decrypt what they wrapped, `kmsctl audit verify` passes.
// Knobs: KMSFS_CRASH_CYCLES (default 200), KMSFS_CRASH_SEED (default: from the clock; printed).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/base/unique_fd.h"
#include "tests/integration/fs_harness.h"

namespace kmsfs::it {
namespace {

using std::chrono::milliseconds;
constexpr size_t kBlock = 4096;

uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

std::string Data(uint32_t seed, size_t len) {
  std::mt19937 gen(seed);
  std::string s(len, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

struct Op {
  enum Kind { kCreate, kWrite, kAppend, kTruncate, kFsync, kRename, kUnlink } kind = kWrite;
  std::string a, b;  // relative paths (b: rename target)
  uint64_t off = 0;
  uint64_t len = 0;
  uint32_t seed = 0;
};

const char* KindName(Op::Kind k) {
  static const char* kNames[] = {"create", "write",  "append", "truncate",
                                 "fsync",  "rename", "unlink"};
  return kNames[k];
}

// One file as the model knows it.
struct FileObj {
  std::string name;                // where it is
  std::optional<std::string> alt;  // where it may be instead (rename in flight at the kill)
  bool optional = false;           // may be gone (create/unlink/rename-over in flight)
  bool synced = false;             // fsync'ed at least once (acknowledged)
  // Every content the file had since its last acknowledged fsync (or its creation), in order;
  // states.front() is the fsync'ed content, states.back() the latest.
  std::vector<std::string> states;
  const std::string& content() const { return states.back(); }
};

std::string NewContent(const std::string& old, const Op& op) {
  std::string c = old;
  switch (op.kind) {
    case Op::kWrite: {
      if (c.size() < op.off + op.len) c.resize(op.off + op.len, '\0');
      const std::string d = Data(op.seed, op.len);
      c.replace(op.off, op.len, d);
      break;
    }
    case Op::kAppend:
      c += Data(op.seed, op.len);
      break;
    case Op::kTruncate:
      c.resize(op.off, '\0');
      break;
    default:
      break;
  }
  return c;
}

class Model {
 public:
  std::vector<FileObj> files;

  FileObj* Find(const std::string& name) {
    for (auto& f : files) {
      if (f.name == name) return &f;
    }
    return nullptr;
  }

  static const std::vector<std::string>& Names() {
    static const std::vector<std::string> kNames = {"f0",   "f1",   "f2",   "f3",   "f4",   "f5",
                                                    "d/g0", "d/g1", "d/g2", "d/g3", "d/g4", "d/g5"};
    return kNames;
  }

  // A random operation that is valid in the current state.
  Op Next(std::mt19937_64& rng) {
    Op op;
    op.seed = static_cast<uint32_t>(rng());
    std::vector<std::string> free_names;
    for (const auto& n : Names()) {
      if (Find(n) == nullptr) free_names.push_back(n);
    }
    const int r = static_cast<int>(rng() % 100);
    if (files.empty() || (r < 12 && !free_names.empty())) {
      op.kind = Op::kCreate;
      op.a = free_names[rng() % free_names.size()];
      op.len = rng() % 3 == 0 ? 0 : rng() % 20000;
      return op;
    }
    const FileObj& f = files[rng() % files.size()];
    op.a = f.name;
    const uint64_t size = f.content().size();
    if (r < 40) {
      op.kind = Op::kWrite;
      op.off = rng() % (std::min<uint64_t>(size, 40960) + 4097);
      op.len = 1 + rng() % 12288;
    } else if (r < 50) {
      op.kind = Op::kAppend;
      op.len = 1 + rng() % 9000;
      if (size > 49152) op.kind = Op::kTruncate, op.off = rng() % 8192;
    } else if (r < 60) {
      op.kind = Op::kTruncate;
      op.off = rng() % (size + 8192);
    } else if (r < 82) {
      op.kind = Op::kFsync;
    } else if (r < 92) {
      op.kind = Op::kRename;
      do {
        op.b = Names()[rng() % Names().size()];
      } while (op.b == op.a);
    } else {
      op.kind = Op::kUnlink;
    }
    return op;
  }

  // An acknowledged operation.
  void Apply(const Op& op) {
    switch (op.kind) {
      case Op::kCreate:
        AddCreated(op, /*optional=*/false);
        break;
      case Op::kWrite:
      case Op::kAppend:
      case Op::kTruncate:
        AddState(op);
        break;
      case Op::kFsync: {
        FileObj* f = Find(op.a);
        f->states = {f->content()};
        f->synced = true;
        break;
      }
      case Op::kRename:
        Erase(op.b);
        Find(op.a)->name = op.b;
        break;
      case Op::kUnlink:
        Erase(op.a);
        break;
    }
  }

  // An operation that was in flight (or failed) when the kill came: it may or may not have
  // happened, or happened in part.
  void ApplyUncertain(const Op& op) {
    switch (op.kind) {
      case Op::kCreate:
        AddCreated(op, /*optional=*/true);
        break;
      case Op::kWrite:
      case Op::kAppend:
      case Op::kTruncate:
        AddState(op);  // as a possible state: blocks are checked against every state
        break;
      case Op::kFsync:
        break;  // not acknowledged: nothing more is promised
      case Op::kRename:
        if (FileObj* target = Find(op.b)) target->optional = true;
        Find(op.a)->alt = op.b;
        break;
      case Op::kUnlink:
        Find(op.a)->optional = true;
        break;
    }
  }

  // A created file passes through "empty" before its data is written.
  void AddCreated(const Op& op, bool optional) {
    FileObj f;
    f.name = op.a;
    f.optional = optional;
    f.states = {std::string()};
    if (op.len > 0) f.states.push_back(Data(op.seed, op.len));
    files.push_back(std::move(f));
  }
  void AddState(const Op& op) {
    FileObj* f = Find(op.a);
    f->states.push_back(NewContent(f->content(), op));
  }

  void Erase(const std::string& name) {
    files.erase(std::remove_if(files.begin(), files.end(),
                               [&](const FileObj& f) { return f.name == name; }),
                files.end());
  }
};

// ---- the workload child: raw syscalls only, one log line per step -----------------------------

void LogLine(int fd, const std::string& line, bool sync) {
  (void)!::write(fd, line.data(), line.size());
  if (sync) ::fdatasync(fd);
}

// Returns 0 or the errno of the failed step.
// Paths are relative to `root`, a descriptor of the mount's root taken while it was mounted: once
// kmsfs dies every call through it fails (ENOTCONN), even after the mount is detached, instead of
// reaching the bare mountpoint directory.
int RunOp(int root, const Op& op) {
  const char* a = op.a.c_str();
  auto write_all = [](int fd, const std::string& d, off_t off, bool append) -> int {
    size_t done = 0;
    while (done < d.size()) {
      const ssize_t n =
          append ? ::write(fd, d.data() + done, d.size() - done)
                 : ::pwrite(fd, d.data() + done, d.size() - done, off + static_cast<off_t>(done));
      if (n < 0) return errno;
      if (n == 0) return EIO;
      done += static_cast<size_t>(n);
    }
    return 0;
  };
  auto close_checked = [](int fd, int e) -> int {
    if (::close(fd) != 0 && e == 0) e = errno;
    return e;
  };
  switch (op.kind) {
    case Op::kCreate: {
      const int fd = ::openat(root, a, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) return errno;
      return close_checked(fd, write_all(fd, Data(op.seed, op.len), 0, false));
    }
    case Op::kWrite: {
      const int fd = ::openat(root, a, O_WRONLY | O_CLOEXEC);
      if (fd < 0) return errno;
      return close_checked(fd,
                           write_all(fd, Data(op.seed, op.len), static_cast<off_t>(op.off), false));
    }
    case Op::kAppend: {
      const int fd = ::openat(root, a, O_WRONLY | O_APPEND | O_CLOEXEC);
      if (fd < 0) return errno;
      return close_checked(fd, write_all(fd, Data(op.seed, op.len), 0, true));
    }
    case Op::kTruncate: {
      const int fd = ::openat(root, a, O_WRONLY | O_CLOEXEC);
      if (fd < 0) return errno;
      return close_checked(fd, ::ftruncate(fd, static_cast<off_t>(op.off)) == 0 ? 0 : errno);
    }
    case Op::kFsync: {
      const int fd = ::openat(root, a, O_WRONLY | O_CLOEXEC);
      if (fd < 0) return errno;
      return close_checked(fd, ::fsync(fd) == 0 ? 0 : errno);
    }
    case Op::kRename:
      return ::renameat(root, a, root, op.b.c_str()) == 0 ? 0 : errno;
    case Op::kUnlink:
      return ::unlinkat(root, a, 0) == 0 ? 0 : errno;
  }
  return EINVAL;
}

[[noreturn]] void RunWorkload(const std::string& mnt, const std::vector<Op>& ops, int log_fd) {
  const int root = ::open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) ::_exit(2);
  for (size_t k = 0; k < ops.size(); ++k) {
    LogLine(log_fd, "B " + std::to_string(k) + "\n", false);
    const int e = RunOp(root, ops[k]);
    if (e != 0) {
      LogLine(log_fd, "F " + std::to_string(k) + " " + std::to_string(e) + "\n", true);
      ::_exit(1);
    }
    // An fsync is acknowledged only once this line is durable in the side log.
    LogLine(log_fd, "D " + std::to_string(k) + "\n", ops[k].kind == Op::kFsync);
  }
  LogLine(log_fd, "E\n", true);
  ::_exit(0);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// ---- the check after remount --------------------------------------------------------------------

std::set<std::string> Listing(const std::string& mnt) {
  std::set<std::string> out;
  for (const char* dir : {"", "d/"}) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(mnt + "/" + dir, ec)) {
      const std::string n = dir + e.path().filename().string();
      if (n != "d") out.insert(n);
    }
  }
  return out;
}

char ByteAt(const std::string& s, size_t i) { return i < s.size() ? s[i] : '\0'; }

// Checks one file against its model; appends violations. Returns the content read when the whole
// file was readable (the next cycle's base), nullopt otherwise.
std::optional<std::string> CheckFile(const std::string& path, const FileObj& f,
                                     std::vector<std::string>& violations) {
  const std::string who = path + (f.synced ? " (fsync'ed)" : " (never fsync'ed)");
  const bool changed = f.states.size() > 1 || !f.synced;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    if (f.synced && !(changed && e == EIO)) {
      violations.push_back(who + ": open failed: " + std::strerror(e));
    }
    return std::nullopt;
  }
  UniqueFd guard(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    if (!changed) violations.push_back(who + ": fstat failed: " + std::strerror(errno));
    return std::nullopt;
  }
  const size_t size = static_cast<size_t>(st.st_size);
  // Sizes the file had, plus the 4 KiB boundaries crossed by an extending write: kmsfs applies
  // a write block by block, so a write cut short by the kill may end at any of them.
  std::set<size_t> sizes;
  for (size_t k = 0; k < f.states.size(); ++k) {
    sizes.insert(f.states[k].size());
    if (k == 0) continue;
    for (size_t b = (f.states[k - 1].size() / kBlock + 1) * kBlock; b < f.states[k].size();
         b += kBlock) {
      sizes.insert(b);
    }
  }
  if (!sizes.count(size)) {
    std::ostringstream m;
    m << who << ": size " << size << " is none of the sizes it had since its last fsync (";
    for (size_t s : sizes) m << s << " ";
    m << ")";
    violations.push_back(m.str());
    return std::nullopt;
  }
  // Blocks whose content or FINAL mark changed since the last fsync may read as EIO.
  std::set<size_t> touched;
  if (f.states.size() > 1 || !f.synced) {
    size_t max_size = 0;
    for (const auto& s : f.states) max_size = std::max(max_size, s.size());
    for (size_t i = 0; i * kBlock <= max_size; ++i) {
      for (size_t k = 1; k < f.states.size(); ++k) {
        bool differ = false;
        for (size_t j = i * kBlock; j < (i + 1) * kBlock && !differ; ++j) {
          differ = ByteAt(f.states[k], j) != ByteAt(f.states[0], j);
        }
        if (differ) touched.insert(i);
      }
    }
    if (sizes.size() > 1) {
      for (size_t s : sizes) touched.insert(s == 0 ? 0 : (s - 1) / kBlock);
    }
    if (!f.synced) {
      for (size_t i = 0; i * kBlock <= max_size; ++i) touched.insert(i);
    }
  }
  std::string whole;
  bool readable = true;
  const size_t nblocks = (size + kBlock - 1) / kBlock;
  for (size_t i = 0; i < nblocks; ++i) {
    const size_t want = std::min(kBlock, size - i * kBlock);
    std::string buf(want, '\0');
    const ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(i * kBlock));
    if (n < 0) {
      const int e = errno;
      readable = false;
      if (!(e == EIO && touched.count(i))) {
        violations.push_back(who + ": block " + std::to_string(i) + " unreadable (" +
                             std::strerror(e) + ") but not written since its last fsync");
      }
      continue;
    }
    if (static_cast<size_t>(n) != want) {
      violations.push_back(who + ": short read of block " + std::to_string(i));
      readable = false;
      continue;
    }
    bool match = false;
    for (const auto& s : f.states) {
      bool same = true;
      for (size_t j = 0; j < want && same; ++j) same = ByteAt(s, i * kBlock + j) == buf[j];
      if (same) {
        match = true;
        break;
      }
    }
    if (!match) {
      violations.push_back(who + ": block " + std::to_string(i) +
                           " holds bytes the file never had since its last fsync");
      readable = false;
    }
    whole += buf;
  }
  if (!readable) return std::nullopt;
  return whole;
}

// Checks the whole mount against the model, then makes the model equal to what is on disk
// (unreadable files are unlinked), so that the next cycle starts from a known state.
std::vector<std::string> CheckAndRebase(const std::string& mnt, Model& model) {
  std::vector<std::string> violations;
  std::set<std::string> listed = Listing(mnt);
  std::set<std::string> claimed;
  Model next;
  // Resolve the renamed-in-flight file first: where it is decides who holds its target name.
  std::stable_sort(model.files.begin(), model.files.end(),
                   [](const FileObj& x, const FileObj& y) { return x.alt && !y.alt; });
  for (auto& f : model.files) {
    std::string where = f.name;
    if (f.alt && !listed.count(f.name) && listed.count(*f.alt)) where = *f.alt;
    if (!listed.count(where) || claimed.count(where)) {
      if (!f.optional) violations.push_back(f.name + ": missing after the crash");
      continue;
    }
    claimed.insert(where);
    auto got = CheckFile(mnt + "/" + where, f, violations);
    if (got) {
      FileObj n;
      n.name = where;
      n.synced = true;  // read back from a fresh mount: it is what the backing store holds
      n.states = {*got};
      next.files.push_back(std::move(n));
    } else {
      ::unlink((mnt + "/" + where).c_str());
    }
  }
  for (const auto& n : listed) {
    if (!claimed.count(n)) violations.push_back(n + ": appeared without being created");
  }
  model = std::move(next);
  return violations;
}

// keyd's state after a restart: the canary blob still decrypts to what it wrapped, and the audit
// chain verifies.
void CheckKeyd(Sandbox& box, const std::string& blob_path, const std::string& plain_b64) {
  auto dec = box.Ctl({"decrypt", "--ciphertext-blob", "fileb://" + blob_path});
  INFO(dec.err);
  REQUIRE(dec.exit_code == 0);
  CHECK(dec.json["Plaintext"] == plain_b64);
  auto verify = box.Ctl({"audit", "verify"});
  INFO(verify.out << verify.err);
  CHECK(verify.exit_code == 0);
}

TEST_CASE("kmsfs and keyd killed at random moments lose nothing fsync'ed", "[crash]") {
  const uint64_t cycles = EnvU64("KMSFS_CRASH_CYCLES", 200);
  const uint64_t seed =
      EnvU64("KMSFS_CRASH_SEED",
             static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) %
                 1000000007);
  std::printf("crash: KMSFS_CRASH_SEED=%llu KMSFS_CRASH_CYCLES=%llu\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(cycles));
  std::fflush(stdout);
  RequireFuse();
  Sandbox box;
  auto keyd = box.StartKeyd();
  const std::string key = CreateKey(box);
  const std::string cipherdir = box.Path("cipher");
  const std::string mnt = box.Path("mnt");
  InitVolume(box, key, cipherdir);
  const std::string blob = box.Path("canary.blob");
  const std::string plain_b64 = "Y3Jhc2gtY2FuYXJ5";  // "crash-canary"
  {
    auto enc = box.Ctl({"encrypt", "--key-id", key, "--plaintext", plain_b64, "--outfile", blob});
    INFO(enc.err);
    REQUIRE(enc.exit_code == 0);
  }

  Model model;
  std::vector<std::string> all_violations;
  std::map<std::string, int> failures;  // errno names of the workload's first failed step
  uint64_t keyd_kills = 0, acked_fsyncs = 0, in_flight = 0;
  std::string in_flight_desc;  // the previous cycle's step in flight at the kill, for reports
  for (uint64_t cycle = 0; cycle < cycles; ++cycle) {
    const uint64_t cseed = seed * 1000003 + cycle;
    std::mt19937_64 rng(cseed);
    auto mount = std::make_unique<Mount>(box, cipherdir, mnt);
    if (cycle == 0) {
      REQUIRE(::mkdir((mnt + "/d").c_str(), 0755) == 0);
    } else {
      auto v = CheckAndRebase(mnt, model);
      for (auto& s : v) {
        all_violations.push_back("cycle " + std::to_string(cycle - 1) + " (seed " +
                                 std::to_string(seed) + "): " + s + in_flight_desc);
        std::printf("crash: VIOLATION %s\n", all_violations.back().c_str());
      }
    }

    // The workload, generated from a copy of the model so that the parent can replay it.
    const size_t nops = 6 + rng() % 40;
    std::vector<Op> ops;
    {
      Model m = model;
      for (size_t k = 0; k < nops; ++k) {
        ops.push_back(m.Next(rng));
        m.Apply(ops.back());
      }
    }
    const size_t kill_at = rng() % (nops + 2);  // >= nops: after the workload ended
    const bool kill_keyd = rng() % 6 == 0;
    const unsigned delay_us = static_cast<unsigned>(rng() % 3000);
    const std::string log_path = box.Path("workload.log");
    const int log_fd =
        ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    REQUIRE(log_fd >= 0);
    std::fflush(nullptr);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) RunWorkload(mnt, ops, log_fd);
    ::close(log_fd);

    // Wait (by polling the side log) until step kill_at has begun or the workload ended.
    const std::string begin_mark = "B " + std::to_string(kill_at) + "\n";
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    int status = 0;
    bool child_done = false;
    for (;;) {
      const std::string log = ReadText(log_path);
      if (log.find(begin_mark) != std::string::npos) break;
      if (::waitpid(child, &status, WNOHANG) == child) {
        child_done = true;
        break;
      }
      if (std::chrono::steady_clock::now() > give_up) break;
      ::usleep(200);
    }
    ::usleep(delay_us);
    const std::string log_before_kill = ReadText(log_path);
    if (kill_keyd) {
      keyd->Kill9();
      ++keyd_kills;
    }
    ::kill(mount->pid(), SIGKILL);
    if (!child_done) {
      bool ended = false;
      for (int i = 0; i < 30'000 && !ended; ++i) {
        if (::waitpid(child, &status, WNOHANG) == child)
          ended = true;
        else
          ::usleep(1000);
      }
      if (!ended) {
        all_violations.push_back("cycle " + std::to_string(cycle) +
                                 ": the workload hung after the kill");
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
      }
    }
    // Detach only once the workload has ended: the kernel fails its requests (ENOTCONN) as soon
    // as kmsfs dies, but after a detach its paths would reach the bare mountpoint directory.
    (void)Run({"fusermount3", "-uz", mount->mountpoint()});
    mount.reset();  // already dead and detached: only reaps it
    if (kill_keyd) {
      keyd.reset();
      keyd = box.StartKeyd();
      CheckKeyd(box, blob, plain_b64);
    }

    // Replay what the side log says was acknowledged.
    std::istringstream lines(ReadText(log_path));
    std::string tag;
    size_t done = 0;
    bool has_begun = false;  // a step began and did not finish (not an optional: gcc 12's
    size_t begun = 0;        // -Wmaybe-uninitialized misfires on it)
    while (lines >> tag) {
      if (tag == "E") break;
      size_t k = 0;
      lines >> k;
      if (tag == "B") {
        has_begun = true;
        begun = k;
      } else if (tag == "D") {
        model.Apply(ops[k]);
        if (ops[k].kind == Op::kFsync) ++acked_fsyncs;
        done = k + 1;
        has_begun = false;
      } else if (tag == "F") {
        int e = 0;
        lines >> e;
        failures[std::string(KindName(ops[k].kind)) + ":" + std::strerror(e)]++;
        if (log_before_kill.find("F " + std::to_string(k) + " ") != std::string::npos) {
          all_violations.push_back("cycle " + std::to_string(cycle) + ": step " +
                                   std::to_string(k) + " (" + KindName(ops[k].kind) +
                                   ") failed before any kill: " + std::strerror(e));
        }
      }
    }
    if (has_begun && begun == done && done < ops.size()) {
      model.ApplyUncertain(ops[done]);
      ++in_flight;
      in_flight_desc = std::string(" [in flight at the kill: ") + KindName(ops[done].kind) + " " +
                       ops[done].a + (ops[done].b.empty() ? "" : " -> " + ops[done].b) +
                       (kill_keyd ? ", keyd killed too" : "") + "]";
    } else {
      in_flight_desc = kill_keyd ? " [nothing in flight; keyd killed too]" : " [nothing in flight]";
    }
  }

  // Last check on a clean mount, then a clean unmount and a clean keyd stop.
  auto mount = std::make_unique<Mount>(box, cipherdir, mnt);
  for (auto& s : CheckAndRebase(mnt, model)) all_violations.push_back("final: " + s);
  CHECK(mount->Unmount());
  CheckLog(mount->Log(), {".*"}, {box.root_key_hex()});
  CheckKeyd(box, blob, plain_b64);
  CHECK(keyd->Stop() == std::optional<int>(0));
  CheckLog(keyd->Log(), {".*"}, {box.root_key_hex()});

  std::printf(
      "crash: %llu cycles, seed %llu: %llu keyd kills, %llu acknowledged fsyncs, %llu "
      "steps in flight at the kill, %zu violations\n",
      static_cast<unsigned long long>(cycles), static_cast<unsigned long long>(seed),
      static_cast<unsigned long long>(keyd_kills), static_cast<unsigned long long>(acked_fsyncs),
      static_cast<unsigned long long>(in_flight), all_violations.size());
  for (const auto& [what, n] : failures)
    std::printf("crash:   failed step %s x%d\n", what.c_str(), n);
  for (const auto& v : all_violations) std::printf("crash: VIOLATION %s\n", v.c_str());
  CHECK(all_violations.empty());
}

}  // namespace
}  // namespace kmsfs::it
