// The audit trail's write-ahead file: records durable only there survive a crash (replay), a torn
// last frame is dropped, a WAL of another history is refused, readers see WAL-only records, many
// ingests and offset resets under concurrent appends and admin transactions lose nothing, and a
// flushed backup holds every acknowledged record.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "keyd/audit/audit_trail.h"
#include "keyd/audit/audit_wal.h"
#include "keyd/store/key_store.h"
#include "keyd/store/maintenance.h"
#include "tests/catch.h"
#include "tests/unit/keyd/audit/audit_test_util.h"
#include "tests/unit/keyd/store/store_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::AllRecords;
using testing::AuditTempDir;
using testing::QuietOptions;
using testing::SampleRecord;

// WAL only: nothing reaches LMDB before Flush/close.
AuditTrail::Options WalOnly() {
  AuditTrail::Options o = QuietOptions(nullptr);
  o.wal_bytes = uint64_t{1} << 20;
  o.ingest_every = 1'000'000;
  return o;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  REQUIRE(out.good());
}

// A crash as far as files go: the state's files copied while the trail is open and idle.
void CopyState(const std::string& from, const std::string& to) {
  REQUIRE(::mkdir(to.c_str(), 0700) == 0);
  for (const char* name : {"data.mdb", "audit.wal"}) {
    const std::string dst = to + "/" + name;
    WriteAll(dst, ReadAll(from + "/" + name));
    REQUIRE(::chmod(dst.c_str(), 0600) == 0);
  }
}

// Records in LMDB's "audit" database, read raw (no trail, so no replay).
size_t LmdbRecords(Env& env) {
  auto db = env.OpenDb("audit", /*create=*/false);
  if (!db.ok()) return 0;
  auto txn = env.BeginRead();
  REQUIRE(txn.ok());
  size_t n = 0;
  REQUIRE(txn->Scan(*db, "", "",
                    [&](std::string_view, std::string_view) {
                      ++n;
                      return true;
                    })
              .ok());
  return n;
}

void CheckDenseAndChained(const std::vector<TrailRecord>& all) {
  for (size_t i = 0; i < all.size(); ++i) {
    INFO("record " << i + 1);
    REQUIRE(all[i].record.sequence == i + 1);
    if (i > 0) REQUIRE(all[i].prev_hash == all[i - 1].hash);
  }
}

TEST_CASE("records durable only in the WAL survive a crash and are replayed into LMDB",
          "[audit][wal]") {
  AuditTempDir dir("/var/tmp");
  const std::string state = dir.Sub("state");
  constexpr int kRecords = 40;
  // The child appends (WAL only), reports how many were acknowledged, and dies without running
  // any destructor: no ingest, no close.
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto env = Env::Open(state);
    if (!env.ok()) ::_exit(2);
    auto trail = AuditTrail::Open(**env, WalOnly());
    if (!trail.ok()) ::_exit(3);
    int acked = 0;
    for (int i = 1; i <= kRecords; ++i) {
      if ((*trail)->Append(SampleRecord(i)).ok()) ++acked;
    }
    (void)!::write(fds[1], &acked, sizeof acked);
    ::_exit(0);
  }
  ::close(fds[1]);
  int acked = -1;
  REQUIRE(::read(fds[0], &acked, sizeof acked) == sizeof acked);
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(acked == kRecords);

  auto env = Env::Open(state);
  REQUIRE(env.ok());
  CHECK(LmdbRecords(**env) == 0);  // the records were only in audit.wal
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE(trail.ok());
  CHECK(LmdbRecords(**env) == kRecords);  // replayed at Open, before any reader asked
  const auto all = AllRecords(**trail);
  REQUIRE(all.size() == kRecords);
  CheckDenseAndChained(all);
  for (int i = 0; i < kRecords; ++i) CHECK(all[i].record.detail == SampleRecord(i + 1).detail);
  auto v = (*trail)->VerifyChain();
  REQUIRE(v.ok());
  CHECK(v->ok);
  CHECK(v->message == "verified 1..40");
  // The chain continues after the replayed records.
  REQUIRE((*trail)->Append(SampleRecord(41)).ok());
  CHECK((*trail)->VerifyChain()->message == "verified 1..41");
}

struct WalSource {
  AuditTempDir dir;
  std::unique_ptr<Env> env;
  std::unique_ptr<AuditTrail> trail;
  // `in_lmdb` records flushed into LMDB, then `in_wal` more only in the WAL.
  WalSource(int in_lmdb, int in_wal, int first_detail = 1) {
    auto e = Env::Open(dir.Sub("state"));
    REQUIRE(e.ok());
    env = std::move(*e);
    auto t = AuditTrail::Open(*env, WalOnly());
    REQUIRE(t.ok());
    trail = std::move(*t);
    for (int i = 0; i < in_lmdb; ++i) REQUIRE(trail->Append(SampleRecord(first_detail + i)).ok());
    REQUIRE(trail->Flush().ok());
    for (int i = in_lmdb; i < in_lmdb + in_wal; ++i) {
      REQUIRE(trail->Append(SampleRecord(first_detail + i)).ok());
    }
  }
  std::string state() const { return dir.Sub("state"); }
};

TEST_CASE("a torn or garbled last frame is dropped on replay, the frames before it kept",
          "[audit][wal]") {
  WalSource src(5, 10);
  const std::string copy = src.dir.Sub("copy");
  CopyState(src.state(), copy);
  std::string wal = ReadAll(copy + "/audit.wal");
  const auto frames = ParseWalFrames(wal);
  REQUIRE(frames.size() == 10);  // 6..15 from offset 0
  CHECK(frames.front().sequence == 6);
  size_t last_at = 0;
  for (size_t i = 0; i + 1 < frames.size(); ++i)
    last_at += kWalFrameOverhead + frames[i].text.size();
  const size_t last_len = kWalFrameOverhead + frames.back().text.size();

  SECTION("one byte of the last record flipped") { wal[last_at + 40] ^= 0x20; }
  SECTION("the last frame's second half never reached the disk (zeros)") {
    std::fill(wal.begin() + last_at + last_len / 2, wal.begin() + last_at + last_len, '\0');
  }
  SECTION("the last frame's check garbled") { wal[last_at + last_len - 1] ^= 0x01; }
  WriteAll(copy + "/audit.wal", wal);

  auto env = Env::Open(copy);
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE(trail.ok());
  const auto all = AllRecords(**trail);
  REQUIRE(all.size() == 14);  // 1..5 from LMDB, 6..14 replayed, 15 dropped
  CheckDenseAndChained(all);
  CHECK(all.back().record.detail == SampleRecord(14).detail);
  CHECK((*trail)->VerifyChain()->message == "verified 1..14");
  REQUIRE((*trail)->Append(SampleRecord(99)).ok());  // takes number 15 in this history
  CHECK((*trail)->VerifyChain()->message == "verified 1..15");
}

TEST_CASE("a WAL from another history makes Open fail with kCorrupt naming audit.wal",
          "[audit][wal]") {
  WalSource a(5, 5, 1);    // records 6..10 of history A only in A's WAL
  WalSource b(5, 0, 100);  // history B: 5 other records, all in LMDB
  b.trail.reset();
  b.env.reset();
  WriteAll(b.state() + "/audit.wal", ReadAll(a.state() + "/audit.wal"));

  auto env = Env::Open(b.state());
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE_FALSE(trail.ok());
  INFO(trail.error().ToString());
  CHECK(trail.error().code() == Code::kCorrupt);
  CHECK(trail.error().message().find(b.state() + "/audit.wal") != std::string::npos);
  CHECK(trail.error().message().find("another history") != std::string::npos);
  CHECK(LmdbRecords(**env) == 5);  // nothing of A was taken in

  SECTION("a WAL that does not start right after the LMDB head is refused too") {
    // A's WAL (records 6..10) next to an empty state, which ends at 0: records 1..5 are missing.
    AuditTempDir empty;
    WriteAll(empty.Sub("audit.wal"), ReadAll(a.state() + "/audit.wal"));
    REQUIRE(::chmod(empty.Sub("audit.wal").c_str(), 0600) == 0);
    auto e2 = Env::Open(empty.path());
    REQUIRE(e2.ok());
    auto t2 = AuditTrail::Open(**e2, QuietOptions(nullptr));
    REQUIRE_FALSE(t2.ok());
    CHECK(t2.error().code() == Code::kCorrupt);
  }
}

TEST_CASE("an unsafe audit.wal is refused, not written", "[audit][wal]") {
  AuditTempDir dir;
  const std::string state = dir.Sub("state");
  REQUIRE(::mkdir(state.c_str(), 0700) == 0);
  SECTION("group/world readable") {
    WriteAll(state + "/audit.wal", "");
    REQUIRE(::chmod((state + "/audit.wal").c_str(), 0644) == 0);
  }
  SECTION("a symbolic link") {
    REQUIRE(::symlink(dir.Sub("elsewhere").c_str(), (state + "/audit.wal").c_str()) == 0);
  }
  auto env = Env::Open(state);
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE_FALSE(trail.ok());
  CHECK(trail.error().code() == Code::kPermissionDenied);
  CHECK(trail.error().message().find("audit.wal") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.Sub("elsewhere")));
}

TEST_CASE("a FIFO or a hard-linked file at audit.wal is refused without blocking",
          "[audit][wal]") {
  AuditTempDir dir;
  const std::string state = dir.Sub("state");
  const std::string wal = state + "/audit.wal";
  REQUIRE(::mkdir(state.c_str(), 0700) == 0);
  std::string expect;
  SECTION("a FIFO (no writer: a blocking open for reading would hang)") {
    REQUIRE(::mkfifo(wal.c_str(), 0600) == 0);
    expect = "not a regular file";
  }
  SECTION("a second name of another file (a hard link)") {
    const std::string other = state + "/other";
    WriteAll(other, "some bytes");
    REQUIRE(::chmod(other.c_str(), 0600) == 0);
    REQUIRE(::link(other.c_str(), wal.c_str()) == 0);
    expect = "2 hard links";
  }
  auto env = Env::Open(state);
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE_FALSE(trail.ok());
  INFO(trail.error().ToString());
  CHECK(trail.error().code() == Code::kPermissionDenied);
  CHECK(trail.error().message().find(wal) != std::string::npos);
  CHECK(trail.error().message().find(expect) != std::string::npos);
  // Not replaced or written: the same file is still there, unchanged.
  struct stat st {};
  REQUIRE(::lstat(wal.c_str(), &st) == 0);
  if (expect == "2 hard links") {
    CHECK(S_ISREG(st.st_mode));
    CHECK(st.st_nlink == 2);
    CHECK(ReadAll(wal) == "some bytes");
  } else {
    CHECK(S_ISFIFO(st.st_mode));
  }
}

TEST_CASE("an audit.wal that exists but cannot be opened stops Open (it may hold records)",
          "[audit][wal]") {
  AuditTempDir dir;
  const std::string state = dir.Sub("state");
  REQUIRE(::mkdir(state.c_str(), 0700) == 0);
  REQUIRE(::mkdir((state + "/audit.wal").c_str(), 0700) == 0);  // open(O_RDWR): EISDIR
  auto env = Env::Open(state);
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE_FALSE(trail.ok());
  INFO(trail.error().ToString());
  CHECK(trail.error().code() == Code::kFailedPrecondition);
  CHECK(trail.error().message().find("audit.wal") != std::string::npos);
}

TEST_CASE("without a WAL (wal_bytes 0), one left by an earlier run is replayed and removed",
          "[audit][wal]") {
  WalSource src(2, 3);  // 3..5 only in the WAL
  CopyState(src.state(), src.dir.Sub("crashed"));
  auto env = Env::Open(src.dir.Sub("crashed"));
  REQUIRE(env.ok());
  AuditTrail::Options o = QuietOptions(nullptr);
  o.wal_bytes = 0;
  auto trail = AuditTrail::Open(**env, o);
  REQUIRE(trail.ok());
  CHECK(LmdbRecords(**env) == 5);
  CHECK_FALSE(std::filesystem::exists(src.dir.Sub("crashed/audit.wal")));
  REQUIRE((*trail)->Append(SampleRecord(6)).ok());  // committed directly in LMDB
  CHECK(LmdbRecords(**env) == 6);
  CHECK((*trail)->VerifyChain()->message == "verified 1..6");
}

TEST_CASE("a record longer than a WAL frame may hold is committed in LMDB, and survives a crash",
          "[audit][wal]") {
  AuditTempDir dir;
  const std::string state = dir.Sub("state");
  auto env = Env::Open(state);
  REQUIRE(env.ok());
  AuditTrail::Options o = WalOnly();
  o.wal_bytes = uint64_t{4} << 20;  // room for the big frame: only the text limit can decide
  auto trail = AuditTrail::Open(**env, o);
  REQUIRE(trail.ok());
  AuditRecord big = SampleRecord(2);
  big.detail = std::string(kWalMaxText + 1000, 'd');
  REQUIRE((*trail)->Append(SampleRecord(1)).ok());  // WAL only
  CHECK(LmdbRecords(**env) == 0);
  REQUIRE((*trail)->Append(big).ok());
  CHECK(LmdbRecords(**env) == 2);  // committed directly, together with the pending record 1
  REQUIRE((*trail)->Append(SampleRecord(3)).ok());  // back to the WAL
  CHECK(LmdbRecords(**env) == 2);

  // A crash now: record 3 is only in the WAL, after an offset reset; all three come back.
  const std::string copy = dir.Sub("copy");
  CopyState(state, copy);
  for (const auto& f : ParseWalFrames(ReadAll(copy + "/audit.wal"))) {
    CHECK(f.text.size() <= kWalMaxText);
  }
  auto env2 = Env::Open(copy);
  REQUIRE(env2.ok());
  auto trail2 = AuditTrail::Open(**env2, QuietOptions(nullptr));
  REQUIRE(trail2.ok());
  const auto all = AllRecords(**trail2);
  REQUIRE(all.size() == 3);
  CheckDenseAndChained(all);
  CHECK(all[1].record.detail == big.detail);
  CHECK(all[2].record.detail == SampleRecord(3).detail);
  CHECK((*trail2)->VerifyChain()->message == "verified 1..3");
}

// A WAL write whose fdatasync fails is refused and its frames zeroed; when the zeroing fails too,
// the frames may stay intact on disk. If an admin record then took the first one's sequence number
// and keyd crashed, replay found valid frames after it that do not chain: a false kCorrupt. Now
// the leftover is erased first by whoever writes next, and nothing is written while that fails.
TEST_CASE("frames of a failed WAL write that could not be erased are erased before anything else",
          "[audit][wal][txn]") {
  // Faults by WAL write step, counted from `step` = 0: 0 is the pwrite of a gate batch (record 4
  // alone), held until two more callers queue behind it so the next batch holds two records
  // (5 and 6); 1 is the gate's fdatasync, 2 that batch's pwrite, 3 its fdatasync (fails), 4 the
  // erasing pwrite (fails).
  std::atomic<int> step{-1};          // -1: no faults
  std::atomic<bool> fail_all{false};  // every WAL write fails (the disk stays broken)
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool gate_open = false;
  AuditTrail::Options o = WalOnly();
  o.wal_fault_for_test = [&](bool sync) -> int {
    if (fail_all) return EIO;
    if (step < 0) return 0;
    const int at = step++;
    if (at == 0) {
      std::unique_lock lock(gate_mu);
      gate_cv.wait(lock, [&] { return gate_open; });
    }
    if (at == 3 && !sync) return 0;  // not the script this test expects: let the CHECKs say so
    return at == 3 || at == 4 ? EIO : 0;
  };
  AuditTempDir dir;
  const std::string state = dir.Sub("state");
  auto env = Env::Open(state);
  REQUIRE(env.ok());
  auto trail = AuditTrail::Open(**env, o);
  REQUIRE(trail.ok());
  for (int i = 1; i <= 3; ++i) REQUIRE((*trail)->Append(SampleRecord(i)).ok());

  step = 0;
  Status st[3];
  std::vector<std::thread> threads;
  threads.emplace_back([&] { st[0] = (*trail)->Append(SampleRecord(4)); });
  while (step < 1) std::this_thread::yield();  // the gate batch's committer is in its pwrite
  threads.emplace_back([&] { st[1] = (*trail)->Append(SampleRecord(5)); });
  threads.emplace_back([&] { st[2] = (*trail)->Append(SampleRecord(6)); });
  while ((*trail)->GetStats().queued < 3) std::this_thread::yield();
  {
    std::lock_guard lock(gate_mu);
    gate_open = true;
  }
  gate_cv.notify_all();
  for (auto& t : threads) t.join();
  CHECK(st[0].ok());
  CHECK(st[1].code() == Code::kIo);  // refused: its fdatasync failed
  CHECK(st[2].code() == Code::kIo);
  CHECK(step == 5);
  step = -1;
  {
    const auto frames = ParseWalFrames(ReadAll(state + "/audit.wal"));
    REQUIRE(frames.size() == 6);  // the refused records' frames are intact
    CHECK(frames.back().sequence == 6);
  }

  SECTION("the admin transaction erases them first, and a crash copy then opens") {}
  SECTION("while erasing keeps failing, appends, admin records and Flush are refused") {
    fail_all = true;
    CHECK((*trail)->Append(SampleRecord(7)).code() == Code::kIo);
    CHECK((*trail)->Flush().code() == Code::kIo);
    {
      auto txn = (*env)->BeginWrite();
      REQUIRE(txn.ok());
      Status s = (*trail)->AppendInTxn(*txn, SampleRecord(8, "DisableKey"));
      CHECK(s.code() == Code::kIo);
      CHECK(s.ToString().find("cannot be erased") != std::string::npos);
    }  // aborted
    CHECK(LmdbRecords(**env) == 0);
    fail_all = false;
  }
  // An administrative record in its own transaction takes sequence number 5.
  {
    auto txn = (*env)->BeginWrite();
    REQUIRE(txn.ok());
    REQUIRE((*trail)->AppendInTxn(*txn, SampleRecord(100, "DisableKey")).ok());
    REQUIRE(txn->Commit().ok());
  }
  CHECK(ParseWalFrames(ReadAll(state + "/audit.wal")).size() == 4);  // the leftover is zeros

  // A crash now: the copy opens (no false kCorrupt) and holds 1..4 and the admin record.
  const std::string copy = dir.Sub("copy");
  CopyState(state, copy);
  auto env2 = Env::Open(copy);
  REQUIRE(env2.ok());
  auto trail2 = AuditTrail::Open(**env2, QuietOptions(nullptr));
  INFO((trail2.ok() ? std::string("ok") : trail2.error().ToString()));
  REQUIRE(trail2.ok());
  const auto all = AllRecords(**trail2);
  REQUIRE(all.size() == 5);
  CheckDenseAndChained(all);
  CHECK(all[3].record.detail == SampleRecord(4).detail);
  CHECK(all[4].record.operation == "DisableKey");
  CHECK((*trail2)->VerifyChain()->message == "verified 1..5");
  // And the original goes on.
  REQUIRE((*trail)->Append(SampleRecord(9)).ok());
  CHECK((*trail)->VerifyChain()->message == "verified 1..6");
}

TEST_CASE("the WAL file is preallocated with written zeros, mode 0600", "[audit][wal]") {
  AuditTempDir dir("/var/tmp");
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  AuditTrail::Options o = QuietOptions(nullptr);
  o.wal_bytes = 256 * 1024;
  auto trail = AuditTrail::Open(**env, o);
  REQUIRE(trail.ok());
  struct stat st {};
  REQUIRE(::stat(dir.Sub("state/audit.wal").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_size == 256 * 1024);
  CHECK(st.st_blocks * 512 >= st.st_size);  // allocated, not a sparse file
}

TEST_CASE("List and Tail see records that are only in the WAL", "[audit][wal]") {
  WalSource src(5, 7);  // 1..5 in LMDB, 6..12 only in the WAL
  CHECK(LmdbRecords(*src.env) == 5);
  AuditTrail& t = *src.trail;
  auto all = t.Tail(0, 100);
  REQUIRE(all.ok());
  REQUIRE(all->records.size() == 12);
  CheckDenseAndChained(all->records);
  CHECK_FALSE(all->more);
  CHECK(all->next_after == 12);
  CHECK(LmdbRecords(*src.env) == 5);  // reading did not ingest

  // Paging across the LMDB/WAL boundary.
  auto p1 = t.Tail(3, 2);
  REQUIRE(p1->records.size() == 2);
  CHECK(p1->records[0].record.sequence == 4);
  CHECK(p1->more);
  auto p2 = t.Tail(p1->next_after, 3);
  REQUIRE(p2->records.size() == 3);
  CHECK(p2->records[0].record.sequence == 6);
  CHECK(p2->more);
  auto p3 = t.Tail(p2->next_after, 100);
  REQUIRE(p3->records.size() == 4);
  CHECK(p3->records.back().record.sequence == 12);
  CHECK_FALSE(p3->more);
  CHECK(t.Tail(12, 10)->records.empty());

  // Filters apply to WAL records too: odd details are /alice/, uid 1000 + i % 4.
  AuditFilter f;
  f.limit = 100;
  f.uid = 1001;
  auto by_uid = t.List(f);
  REQUIRE(by_uid.ok());
  std::vector<uint64_t> seqs;
  for (const auto& r : by_uid->records) seqs.push_back(r.record.sequence);
  CHECK(seqs == std::vector<uint64_t>{1, 5, 9});
  CHECK(t.Head()->sequence == 12);

  // After a Flush, the same view from LMDB alone.
  REQUIRE(t.Flush().ok());
  CHECK(LmdbRecords(*src.env) == 12);
  auto again = t.Tail(0, 100);
  REQUIRE(again->records.size() == 12);
  for (size_t i = 0; i < 12; ++i) CHECK(again->records[i].json == all->records[i].json);
}

TEST_CASE("WAL wrap-around: 8 appenders and aborting admin transactions lose nothing",
          "[audit][wal][group]") {
  AuditTempDir dir("/var/tmp");
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  AuditTrail::Options o = QuietOptions(nullptr);
  o.wal_bytes = 48 * 1024;  // ~65 frames: the file fills and starts over many times
  o.ingest_every = 40;
  o.checkpoint_every = 100;
  auto trail = AuditTrail::Open(**env, o);
  REQUIRE(trail.ok());
  auto side = (*env)->OpenDb("test_side", true);
  REQUIRE(side.ok());

  constexpr int kThreads = 8, kPerThread = 300;
  std::atomic<int> failures{0}, committed_in_txn{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        AuditRecord r = SampleRecord(i);
        r.detail = std::to_string(t) + "/" + std::to_string(i);
        if (!(*trail)->Append(std::move(r)).ok()) ++failures;
      }
    });
  }
  threads.emplace_back([&] {  // the administrative path, a third of the changes failing
    for (int i = 0; i < 150; ++i) {
      auto txn = (*env)->BeginWrite();
      if (!txn.ok() || !txn->Put(*side, "k" + std::to_string(i), "v").ok() ||
          !(*trail)->AppendInTxn(*txn, SampleRecord(i, "PutKeyPolicy")).ok()) {
        ++failures;
        continue;
      }
      if (i % 3 == 0) continue;  // aborted with its change
      if (i % 5 == 1 && !(*trail)->AppendInTxn(*txn, SampleRecord(i, "DisableKey")).ok()) {
        ++failures;  // two records in one transaction
      }
      if (!txn->Commit().ok()) ++failures;
      ++committed_in_txn;
    }
  });
  for (auto& th : threads) th.join();
  REQUIRE(failures == 0);
  const AuditTrail::Stats stats = (*trail)->GetStats();
  WARN("wal: " << stats.appended << " appends in " << stats.commits << " WAL commits, "
               << stats.ingests << " ingests, largest batch " << stats.max_batch);
  CHECK(stats.appended == kThreads * kPerThread);
  CHECK(stats.failed_commits == 0);
  CHECK(stats.ingests >= 20);  // the file wrapped around many times
  CHECK(stats.failed_ingests == 0);

  auto check = [&](AuditTrail& t) {
    const auto all = AllRecords(t);
    size_t admin = 0, disable = 0;
    std::map<int, int> next_of_thread;
    for (size_t i = 0; i < all.size(); ++i) {
      INFO("record " << i + 1);
      REQUIRE(all[i].record.sequence == i + 1);
      if (i > 0) REQUIRE(all[i].prev_hash == all[i - 1].hash);
      if (all[i].record.operation == "PutKeyPolicy") {
        ++admin;
        continue;
      }
      if (all[i].record.operation == "DisableKey") {
        ++disable;
        REQUIRE(all[i - 1].record.operation == "PutKeyPolicy");  // same transaction, adjacent
        continue;
      }
      const std::string& d = all[i].record.detail;
      const int th = std::stoi(d.substr(0, d.find('/')));
      const int n = std::stoi(d.substr(d.find('/') + 1));
      REQUIRE(n == next_of_thread[th]++);  // each thread's records, all of them, in order
    }
    CHECK(admin == static_cast<size_t>(committed_in_txn.load()));
    for (int th = 0; th < kThreads; ++th) CHECK(next_of_thread[th] == kPerThread);
    CHECK(all.size() == kThreads * kPerThread + admin + disable);
    return all.size();
  };
  const size_t total = check(**trail);

  // A crash now (files copied while the trail is idle) loses nothing either.
  CopyState(dir.Sub("state"), dir.Sub("crashed"));
  {
    auto env2 = Env::Open(dir.Sub("crashed"));
    REQUIRE(env2.ok());
    auto t2 = AuditTrail::Open(**env2, o);  // same checkpoint_every: replay stores them too
    REQUIRE(t2.ok());
    CHECK(check(**t2) == total);
    auto v = (*t2)->VerifyChain();
    CHECK(v->ok);
    CHECK(v->checkpoints_matched == total / 100);
  }
  auto v = (*trail)->VerifyChain();
  REQUIRE(v.ok());
  CHECK(v->ok);
  CHECK(v->message == "verified 1.." + std::to_string(total));
  CHECK(v->checkpoints_matched == total / 100);  // at each multiple, however records grouped
}

TEST_CASE("admin records in LMDB and WAL records interleave across reopen", "[audit][wal][txn]") {
  WalSource src(2, 3);  // 1..2 in LMDB, 3..5 pending in the WAL
  auto side = src.env->OpenDb("test_side", true);
  REQUIRE(side.ok());
  {
    auto txn = src.env->BeginWrite();
    REQUIRE(txn->Put(*side, "k", "v").ok());
    REQUIRE(src.trail->AppendInTxn(*txn, SampleRecord(100, "DisableKey")).ok());
    // aborted: the pending records stay pending (durable in the WAL)
  }
  CHECK(LmdbRecords(*src.env) == 2);
  CHECK(src.trail->Head()->sequence == 5);
  {
    auto txn = src.env->BeginWrite();
    REQUIRE(src.trail->AppendInTxn(*txn, SampleRecord(101, "PutKeyPolicy")).ok());
    REQUIRE(txn->Commit().ok());
  }
  CHECK(LmdbRecords(*src.env) == 6);  // the pending ones went in with the admin record
  CHECK(src.trail->Head()->sequence == 6);
  REQUIRE(src.trail->Append(SampleRecord(7)).ok());  // WAL again, chained on record 6
  CopyState(src.state(), src.dir.Sub("crashed"));
  auto env = Env::Open(src.dir.Sub("crashed"));
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE(trail.ok());
  const auto all = AllRecords(**trail);
  REQUIRE(all.size() == 7);
  CheckDenseAndChained(all);
  CHECK(all[5].record.operation == "PutKeyPolicy");
  CHECK(all[6].record.detail == "record 7");
  CHECK((*trail)->VerifyChain()->ok);
}

TEST_CASE("Flush before a backup: the copy holds every acknowledged record", "[audit][wal]") {
  AuditTempDir dir;
  auto store = KeyStore::Open(dir.Sub("state"), testing::TestRootKey(1));
  REQUIRE(store.ok());
  auto trail = AuditTrail::Open((*store)->env(), WalOnly());
  REQUIRE(trail.ok());
  for (int i = 1; i <= 20; ++i) REQUIRE((*trail)->Append(SampleRecord(i)).ok());

  auto records_in_backup = [&](const std::string& name) {
    const std::string file = dir.Sub(name);
    REQUIRE((*store)->Backup(file).ok());
    const std::string restored = dir.Sub(name + ".d");
    REQUIRE(::mkdir(restored.c_str(), 0700) == 0);
    WriteAll(restored + "/data.mdb", ReadAll(file));
    REQUIRE(::chmod((restored + "/data.mdb").c_str(), 0600) == 0);
    auto env = Env::Open(restored);
    REQUIRE(env.ok());
    return LmdbRecords(**env);
  };
  // Without the flush the copy misses what only the WAL holds (why Backup flushes first).
  CHECK(records_in_backup("before-flush.mdb") == 0);
  AuditSink& sink = **trail;  // what KmsService::Backup calls
  REQUIRE(sink.Flush().ok());
  CHECK(records_in_backup("after-flush.mdb") == 20);
  trail->reset();  // before the store that owns the Env
}

TEST_CASE("restore refuses a state dir holding an audit.wal and flushes the staging trail",
          "[audit][wal][restore]") {
  AuditTempDir dir;
  const std::string backup = dir.Sub("state.bak");
  {
    auto store = KeyStore::Open(dir.Sub("state"), testing::TestRootKey(1));
    REQUIRE(store.ok());
    auto trail = AuditTrail::Open((*store)->env(), WalOnly());
    REQUIRE(trail.ok());
    for (int i = 1; i <= 3; ++i) REQUIRE((*trail)->Append(SampleRecord(i)).ok());
    REQUIRE((*trail)->Flush().ok());
    REQUIRE((*store)->Backup(backup).ok());
    trail->reset();
  }
  // What keyd/main.cc's restore does in the staging dir: a record, flushed, the trail closed.
  auto open = [](std::unique_ptr<Env> env) -> Result<std::unique_ptr<KeyStore>> {
    KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<KeyStore> store,
                           KeyStore::Open(std::move(env), testing::TestRootKey(1), {}));
    KMSFS_ASSIGN_OR_RETURN(std::unique_ptr<AuditTrail> trail,
                           AuditTrail::Open(store->env(), WalOnly()));
    KMSFS_RETURN_IF_ERROR(trail->Append(SampleRecord(4, "RestoreState")));
    KMSFS_RETURN_IF_ERROR(trail->Flush());
    trail.reset();
    return store;
  };
  const std::string target = dir.Sub("target");
  auto lock = LockStateDir(target);
  REQUIRE(lock.ok());
  WriteAll(target + "/audit.wal", "records of the state that was here");
  Status refused = InstallBackup(backup, target, open);
  INFO(refused.ToString());
  CHECK(refused.code() == Code::kAlreadyExists);
  CHECK(refused.error().message().find("audit.wal") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(target + "/data.mdb"));
  CHECK(ReadAll(target + "/audit.wal") == "records of the state that was here");  // untouched

  REQUIRE(::unlink((target + "/audit.wal").c_str()) == 0);
  REQUIRE(InstallBackup(backup, target, open).ok());
  CHECK_FALSE(std::filesystem::exists(target + "/audit.wal"));
  CHECK_FALSE(std::filesystem::exists(target + "/restore.tmp"));
  auto env = Env::Open(target);
  REQUIRE(env.ok());
  CHECK(LmdbRecords(**env) == 4);  // the backup's 3 and the restore's own record
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE(trail.ok());
  CHECK((*trail)->VerifyChain()->message == "verified 1..4");
}

}  // namespace
}  // namespace kmsfs::keyd
