// Tamper evidence: raw LMDB edits to a copy of a trail, and the sequence number VerifyChain names.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>

#include "keyd/audit/audit_trail.h"
#include "keyd/audit/record_codec.h"
#include "tests/catch.h"
#include "tests/unit/keyd/audit/audit_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::AuditTempDir;
using testing::QuietOptions;
using testing::SampleRecord;

// The attacker's view: the audit databases of a copied state, written with the store's own
// transactions (which is what someone with write access to the state directory can do).
struct Raw {
  Env& env;
  Db records, meta;

  std::string Get(uint64_t seq) {
    auto txn = env.BeginRead();
    auto v = txn->Get(records, SequenceKey(seq));
    REQUIRE(v.ok());
    return *v;
  }
  void Put(uint64_t seq, const std::string& text) {
    auto txn = env.BeginWrite();
    REQUIRE(txn->Put(records, SequenceKey(seq), text).ok());
    REQUIRE(txn->Commit().ok());
  }
  void Delete(uint64_t seq) {
    auto txn = env.BeginWrite();
    REQUIRE(txn->Delete(records, SequenceKey(seq)).ok());
    REQUIRE(txn->Commit().ok());
  }
  void SetHead(uint64_t seq) {
    auto rec = DecodeTrailRecord(Get(seq));
    REQUIRE(rec.ok());
    auto txn = env.BeginWrite();
    REQUIRE(txn->Put(meta, "head", EncodeCheckpoint(Checkpoint{seq, rec->hash, 1})).ok());
    REQUIRE(txn->Commit().ok());
  }
  // Changes record `seq`'s Path and recomputes its hash and, if `through` > seq, every later
  // record's link and hash — the best an attacker without an off-host checkpoint can do.
  void AlterAndRehash(uint64_t seq, uint64_t through) {
    crypto::Sha256Digest prev = DecodeTrailRecord(Get(seq))->prev_hash;
    for (uint64_t s = seq; s <= through; ++s) {
      auto rec = DecodeTrailRecord(Get(s));
      REQUIRE(rec.ok());
      if (s == seq) rec->record.path = "/nothing/to/see";
      crypto::Sha256Digest hash;
      Put(s, ComposeRecord(s, rec->record.time_us, EncodeRecordBody(rec->record), prev, &hash));
      prev = hash;
    }
  }
};

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

// Changes the first hex digit after `marker` (a hash) to another valid hex digit.
std::string FlipHexAfter(std::string s, const std::string& marker) {
  const size_t at = s.find(marker);
  REQUIRE(at != std::string::npos);
  char& c = s[at + marker.size()];
  c = c == '0' ? '1' : '0';
  return s;
}

// A compacted copy of `src` (Env::CopyTo, as a backup would be) in a new state dir.
std::unique_ptr<Env> CopyOf(Env& src, const std::string& dir) {
  REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
  const std::string file = dir + "/data.mdb";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(src.CopyTo(fd).ok());
  ::close(fd);
  auto env = Env::Open(dir);
  REQUIRE(env.ok());
  return std::move(*env);
}

struct TamperCase {
  const char* name;
  std::function<void(Raw&)> tamper;
  bool use_checkpoint;  // verify against the checkpoint exported before the tampering
  bool detected;
  uint64_t bad_sequence;
  const char* message;  // exact
};

TEST_CASE("VerifyChain names the first altered, removed or reordered record", "[audit][tamper]") {
  AuditTempDir dir;
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  Checkpoint exported;
  {
    auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
    REQUIRE(trail.ok());
    for (int i = 1; i <= 52; ++i) REQUIRE((*trail)->Append(SampleRecord(i)).ok());
    auto cp = (*trail)->Head();  // kept off-host, not stored in the trail
    REQUIRE(cp.ok());
    exported = *cp;
    REQUIRE((*trail)->VerifyChain(exported)->ok);
  }

  const std::vector<TamperCase> cases = {
      {"edit a field of record 17",
       [](Raw& r) {
         r.Put(17, Replace(r.Get(17), "\"Path\":\"/alice/17.txt\"", "\"Path\":\"/alice/x.txt\""));
       },
       false, true, 17, "record 17: hash mismatch (altered)"},
      {"edit record 17's decision, checked with the checkpoint at hand",
       [](Raw& r) {
         r.Put(17, Replace(r.Get(17), "\"Decision\":\"Allow\"", "\"Decision\":\"Deny\""));
       },
       true, true, 17, "record 17: hash mismatch (altered)"},
      {"edit record 17's time",
       [](Raw& r) { r.Put(17, Replace(r.Get(17), "\"Time\":\"20", "\"Time\":\"19")); }, false, true,
       17, "record 17: hash mismatch (altered)"},
      {"edit record 17's PrevHash",
       [](Raw& r) { r.Put(17, FlipHexAfter(r.Get(17), "\"PrevHash\":\"")); }, false, true, 17,
       "record 17: hash mismatch (altered)"},
      {"edit record 17's Hash", [](Raw& r) { r.Put(17, FlipHexAfter(r.Get(17), "\"Hash\":\"")); },
       false, true, 17, "record 17: hash mismatch (altered)"},
      {"garbage in record 30", [](Raw& r) { r.Put(30, "{\"Sequence\":30"); }, false, true, 30,
       nullptr},
      {"delete record 17", [](Raw& r) { r.Delete(17); }, false, true, 17,
       "sequence gap after 16: record 17 missing"},
      {"delete record 1", [](Raw& r) { r.Delete(1); }, false, true, 1,
       "sequence gap after 0: record 1 missing"},
      {"swap records 17 and 18",
       [](Raw& r) {
         const std::string a = r.Get(17), b = r.Get(18);
         r.Put(17, b);
         r.Put(18, a);
       },
       false, true, 17, "record 18 precedes 17 (reordered)"},
      {"replay record 5 as record 53", [](Raw& r) { r.Put(53, r.Get(5)); }, false, true, 53,
       "record 53: holds a copy of record 5 (reordered or replayed)"},
      {"alter record 17 and rehash only it", [](Raw& r) { r.AlterAndRehash(17, 17); }, false, true,
       17, "record 17: altered and rehashed (record 18's PrevHash does not match its hash)"},
      {"alter record 17 and rehash the rest, head left alone",
       [](Raw& r) { r.AlterAndRehash(17, 52); }, false, true, 52,
       "record 52: hash does not match the head"},
      {"alter record 17, rehash the rest and the head: caught by the checkpoint",
       [](Raw& r) {
         r.AlterAndRehash(17, 52);
         r.SetHead(52);
       },
       true, true, 52,
       "record 52: chain hash does not match the checkpoint (records up to 52 altered and "
       "rehashed)"},
      {"alter record 17, rehash the rest and the head: invisible WITHOUT a checkpoint",
       [](Raw& r) {
         r.AlterAndRehash(17, 52);
         r.SetHead(52);
       },
       false, false, 0, "verified 1..52"},
      {"truncate the tail (41..52), head left alone",
       [](Raw& r) {
         for (uint64_t s = 41; s <= 52; ++s) r.Delete(s);
       },
       false, true, 41, "trail ends at 40 but head says 52"},
      {"truncate the tail (41..52) and roll the head back: caught by the checkpoint",
       [](Raw& r) {
         for (uint64_t s = 41; s <= 52; ++s) r.Delete(s);
         r.SetHead(40);
       },
       true, true, 41, "trail ends at 40 but checkpoint says 52"},
      {"roll the head back only", [](Raw& r) { r.SetHead(40); }, false, true, 41,
       "trail continues to 52 past the head at 40 (head rolled back)"},
  };

  int n = 0;
  for (const TamperCase& c : cases) {
    DYNAMIC_SECTION(c.name) {
      auto copy = CopyOf(**env, dir.Sub("copy" + std::to_string(n)));
      Raw raw{*copy, *copy->OpenDb("audit", false), *copy->OpenDb("audit_meta", false)};
      c.tamper(raw);
      auto trail = AuditTrail::Open(*copy, QuietOptions(nullptr));
      REQUIRE(trail.ok());
      auto report =
          (*trail)->VerifyChain(c.use_checkpoint ? std::optional(exported) : std::nullopt);
      REQUIRE(report.ok());
      INFO(report->message);
      CHECK(report->ok == !c.detected);
      CHECK(report->bad_sequence == c.bad_sequence);
      if (c.message != nullptr) CHECK(report->message == c.message);
    }
    ++n;
  }
}

TEST_CASE("a rolled-back head makes appends fail closed instead of overwriting evidence",
          "[audit][tamper]") {
  AuditTempDir dir;
  auto env = Env::Open(dir.Sub("state"));
  auto trail = AuditTrail::Open(**env, QuietOptions(nullptr));
  for (int i = 1; i <= 5; ++i) REQUIRE((*trail)->Append(SampleRecord(i)).ok());
  REQUIRE((*trail)->Flush().ok());  // from the write-ahead file into LMDB, where Raw edits
  Raw raw{**env, *(*env)->OpenDb("audit", false), *(*env)->OpenDb("audit_meta", false)};
  raw.SetHead(3);
  Status s = (*trail)->Append(SampleRecord(6));
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == Code::kCorrupt);
  CHECK(DecodeTrailRecord(raw.Get(4))->record.detail == "record 4");

  SECTION("the same without the write-ahead file (every commit in LMDB)") {
    AuditTempDir dir2;
    auto env2 = Env::Open(dir2.Sub("state"));
    AuditTrail::Options o = QuietOptions(nullptr);
    o.wal_bytes = 0;
    auto direct = AuditTrail::Open(**env2, o);
    for (int i = 1; i <= 5; ++i) REQUIRE((*direct)->Append(SampleRecord(i)).ok());
    Raw raw2{**env2, *(*env2)->OpenDb("audit", false), *(*env2)->OpenDb("audit_meta", false)};
    raw2.SetHead(3);
    Status s2 = (*direct)->Append(SampleRecord(6));
    CHECK(s2.code() == Code::kCorrupt);
    CHECK(DecodeTrailRecord(raw2.Get(4))->record.detail == "record 4");
  }
}

}  // namespace
}  // namespace kmsfs::keyd
