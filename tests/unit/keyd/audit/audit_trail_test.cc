// AuditTrail: append, list/filter/tail, verify, in-transaction appends, checkpoints, export, prune.
#include "keyd/audit/audit_trail.h"

#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "keyd/store/key_store.h"
#include "tests/catch.h"
#include "tests/unit/keyd/audit/audit_test_util.h"
#include "tests/unit/keyd/store/store_test_util.h"

namespace kmsfs::keyd {
namespace {

using testing::AuditTempDir;
using testing::QuietOptions;
using testing::SampleRecord;
using testing::StepClock;

struct Fixture {
  AuditTempDir dir;
  StepClock clock;
  std::unique_ptr<Env> env;
  std::unique_ptr<AuditTrail> trail;

  Fixture() { Reopen(); }
  void Reopen() {
    trail.reset();
    env.reset();
    auto e = Env::Open(dir.Sub("state"));
    REQUIRE(e.ok());
    env = std::move(*e);
    auto t = AuditTrail::Open(*env, QuietOptions(&clock));
    REQUIRE(t.ok());
    trail = std::move(*t);
  }
  void AppendN(int n, int first = 1) {
    for (int i = first; i < first + n; ++i) REQUIRE(trail->Append(SampleRecord(i)).ok());
  }
  std::vector<uint64_t> Seqs(const AuditFilter& f) {
    auto page = trail->List(f);
    REQUIRE(page.ok());
    std::vector<uint64_t> out;
    for (const auto& t : page->records) out.push_back(t.record.sequence);
    return out;
  }
};

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST_CASE("appended records come back in order with dense sequence numbers", "[audit]") {
  Fixture f;
  f.AppendN(10);
  auto page = f.trail->Tail(0, 100);
  REQUIRE(page.ok());
  REQUIRE(page->records.size() == 10);
  CHECK_FALSE(page->more);
  CHECK(page->next_after == 10);
  for (size_t i = 0; i < 10; ++i) {
    const TrailRecord& t = page->records[i];
    CHECK(t.record.sequence == i + 1);
    CHECK(t.record.detail == "record " + std::to_string(i + 1));
    CHECK(t.record.time_us > 0);
    if (i > 0) CHECK(t.prev_hash == page->records[i - 1].hash);
  }
  CHECK(page->records[0].prev_hash == crypto::Sha256Digest{});

  SECTION("tail after N and paging") {
    auto tail = f.trail->Tail(7, 2);
    REQUIRE(tail.ok());
    REQUIRE(tail->records.size() == 2);
    CHECK(tail->records[0].record.sequence == 8);
    CHECK(tail->more);
    auto rest = f.trail->Tail(tail->next_after, 100);
    REQUIRE(rest.ok());
    REQUIRE(rest->records.size() == 1);
    CHECK(rest->records[0].record.sequence == 10);
    CHECK(f.trail->Tail(10, 5)->records.empty());
    CHECK(f.trail->Tail(0, 0).error().code() == Code::kInvalidArgument);
  }
  SECTION("survives a reopen and the chain continues") {
    f.Reopen();
    f.AppendN(2, 11);
    auto all = f.trail->Tail(0, 100);
    REQUIRE(all->records.size() == 12);
    CHECK(all->records[10].prev_hash == all->records[9].hash);
    auto v = f.trail->VerifyChain();
    REQUIRE(v.ok());
    CHECK(v->ok);
    CHECK(v->message == "verified 1..12");
  }
}

TEST_CASE("List filters by time, key, uid, path prefix, operation and outcome", "[audit]") {
  Fixture f;
  f.AppendN(20);  // record i: uid 1000+i%4, odd → key ...01 and /alice/, i%5==4 → denied
  REQUIRE(f.trail->Append(SampleRecord(21, "CreateKey")).ok());
  AuditFilter all;
  all.limit = 1000;
  auto page = f.trail->List(all);
  REQUIRE(page->records.size() == 21);

  AuditFilter by_uid = all;
  by_uid.uid = 1001;
  CHECK(f.Seqs(by_uid) == std::vector<uint64_t>{1, 5, 9, 13, 17, 21});

  AuditFilter by_key = all;
  by_key.key_id = "1234abcd-0000-0000-0000-000000000002";
  CHECK(f.Seqs(by_key).size() == 10);

  AuditFilter by_path = all;
  by_path.path_prefix = "/alice";
  CHECK(f.Seqs(by_path).size() == 11);
  by_path.path_prefix = "/ali";  // prefixes match whole components only
  CHECK(f.Seqs(by_path).empty());
  by_path.path_prefix = "/alice/1";
  CHECK(f.Seqs(by_path).empty());
  by_path.path_prefix = "/alice/1.txt";
  CHECK(f.Seqs(by_path) == std::vector<uint64_t>{1});

  AuditFilter by_op = all;
  by_op.operation = "CreateKey";
  CHECK(f.Seqs(by_op) == std::vector<uint64_t>{21});

  AuditFilter by_outcome = all;
  by_outcome.outcome = "AccessDeniedException";
  CHECK(f.Seqs(by_outcome) == std::vector<uint64_t>{4, 9, 14, 19});

  AuditFilter by_time = all;  // the step clock: record n has time start + (n-1) ms
  by_time.from_time_us = page->records[4].record.time_us;
  by_time.to_time_us = page->records[7].record.time_us;
  CHECK(f.Seqs(by_time) == std::vector<uint64_t>{5, 6, 7});

  AuditFilter combined = by_uid;
  combined.outcome = "Success";
  combined.after_sequence = 5;
  combined.limit = 2;
  auto p = f.trail->List(combined);
  REQUIRE(p->records.size() == 2);
  CHECK(p->records[0].record.sequence == 13);  // 9 is denied
  CHECK(p->records[1].record.sequence == 17);
  CHECK(p->more);
}

TEST_CASE("VerifyChain passes an untouched trail, empty or not", "[audit][verify]") {
  Fixture f;
  auto v = f.trail->VerifyChain();
  REQUIRE(v.ok());
  CHECK(v->ok);
  CHECK(v->message == "verified: trail is empty");
  f.AppendN(52);
  v = f.trail->VerifyChain();
  CHECK(v->ok);
  CHECK(v->first == 1);
  CHECK(v->last == 52);
  CHECK(v->message == "verified 1..52");
}

TEST_CASE("AppendInTxn commits with the outer change and vanishes with its abort", "[audit][txn]") {
  Fixture f;
  f.AppendN(3);
  auto side = f.env->OpenDb("test_side", true);  // stands for a KeyStore database
  REQUIRE(side.ok());

  SECTION("aborted: neither the change nor the record, and the chain does not advance") {
    {
      auto txn = f.env->BeginWrite();
      REQUIRE(txn.ok());
      REQUIRE(txn->Put(*side, "k", "v").ok());
      REQUIRE(f.trail->AppendInTxn(*txn, SampleRecord(100, "DisableKey")).ok());
      // The outer change fails after the hook: the transaction is destroyed uncommitted.
    }
    auto head = f.trail->Head();
    REQUIRE(head.ok());
    CHECK(head->sequence == 3);
    REQUIRE(f.trail->Append(SampleRecord(4)).ok());
    auto all = f.trail->Tail(0, 100);
    REQUIRE(all->records.size() == 4);
    CHECK(all->records[3].record.sequence == 4);
    CHECK(all->records[3].record.operation == "Decrypt");
    CHECK(all->records[3].prev_hash == all->records[2].hash);
    CHECK(f.trail->VerifyChain()->ok);
    auto rtxn = f.env->BeginRead();
    CHECK(rtxn->Get(*side, "k").error().code() == Code::kNotFound);
  }
  SECTION("committed: record and change together, then group commits chain on it") {
    {
      auto txn = f.env->BeginWrite();
      REQUIRE(txn->Put(*side, "k", "v").ok());
      REQUIRE(f.trail->AppendInTxn(*txn, SampleRecord(100, "DisableKey")).ok());
      REQUIRE(f.trail->AppendInTxn(*txn, SampleRecord(101, "PutKeyPolicy")).ok());
      REQUIRE(txn->Commit().ok());
    }
    REQUIRE(f.trail->Append(SampleRecord(6)).ok());
    auto all = f.trail->Tail(0, 100);
    REQUIRE(all->records.size() == 6);
    CHECK(all->records[3].record.operation == "DisableKey");
    CHECK(all->records[4].record.operation == "PutKeyPolicy");
    CHECK(all->records[5].record.sequence == 6);
    auto v = f.trail->VerifyChain();
    CHECK(v->ok);
    CHECK(v->message == "verified 1..6");
    CHECK(f.trail->GetStats().in_txn == 2);
  }
}

TEST_CASE("through KeyStore's hook: a change and its record stand or fall together",
          "[audit][txn]") {
  AuditTempDir dir;
  auto store = KeyStore::Open(dir.Sub("state"), testing::TestRootKey(1));
  REQUIRE(store.ok());
  auto trail = AuditTrail::Open((*store)->env(), QuietOptions(nullptr));
  REQUIRE(trail.ok());
  AuditTrail& audit = **trail;

  auto key = (*store)->CreateKey("before", {}, "", [&](WriteTxn& txn) {
    return audit.AppendInTxn(txn, SampleRecord(1, "CreateKey"));
  });
  REQUIRE(key.ok());
  CHECK(audit.Head()->sequence == 1);

  // The record is written, then the change fails: both vanish, the chain does not advance.
  auto changed = (*store)->UpdateKey(
      key->key_id,
      [](KeyRecord& r) {
        r.description = "after";
        return Status::Ok();
      },
      [&](WriteTxn& txn) -> Status {
        KMSFS_RETURN_IF_ERROR(audit.AppendInTxn(txn, SampleRecord(2, "UpdateKeyDescription")));
        return Error(Code::kInternal, "the change fails after its record was written");
      });
  REQUIRE_FALSE(changed.ok());
  CHECK((*store)->GetKey(key->key_id)->description == "before");
  CHECK(audit.Head()->sequence == 1);

  REQUIRE(audit.Append(SampleRecord(3)).ok());
  auto all = audit.Tail(0, 10);
  REQUIRE(all->records.size() == 2);
  CHECK(all->records[0].record.operation == "CreateKey");
  CHECK(all->records[1].record.sequence == 2);
  CHECK(all->records[1].record.detail == "record 3");
  CHECK(audit.VerifyChain()->message == "verified 1..2");
  trail->reset();  // before the store that owns the Env
}

TEST_CASE("checkpoints: stored, exported to a file, and compared by VerifyChain",
          "[audit][checkpoint]") {
  Fixture f;
  f.AppendN(52);
  auto cp = f.trail->MakeCheckpoint();
  REQUIRE(cp.ok());
  CHECK(cp->sequence == 52);
  const std::string file = f.dir.Sub("cp.json");
  REQUIRE(WriteCheckpointFile(*cp, file).ok());
  CHECK(WriteCheckpointFile(*cp, file).code() == Code::kAlreadyExists);
  auto back = ReadCheckpointFile(file);
  REQUIRE(back.ok());
  CHECK(back->hash == cp->hash);
  auto v = f.trail->VerifyChain(*back);
  CHECK(v->ok);
  CHECK(v->message == "verified 1..52; matches the checkpoint at 52");
  CHECK(v->checkpoints_matched == 2);  // the file's and the stored one

  SECTION("a checkpoint from the future (another trail) does not match") {
    Checkpoint forged = *cp;
    forged.hash[0] ^= 1;
    auto bad = f.trail->VerifyChain(forged);
    CHECK_FALSE(bad->ok);
    CHECK(bad->bad_sequence == 52);
    CHECK(bad->message.find("record 52: chain hash does not match the checkpoint") == 0);
  }
}

TEST_CASE("periodic checkpoints are stored as the head passes multiples", "[audit][checkpoint]") {
  AuditTempDir dir;
  auto env = Env::Open(dir.Sub("state"));
  AuditTrail::Options o = QuietOptions(nullptr);
  o.checkpoint_every = 10;
  auto trail = AuditTrail::Open(**env, o);
  REQUIRE(trail.ok());
  for (int i = 1; i <= 25; ++i) REQUIRE((*trail)->Append(SampleRecord(i)).ok());
  auto cps = (*trail)->ListCheckpoints();
  REQUIRE(cps.ok());
  REQUIRE(cps->size() == 2);
  CHECK((*cps)[0].sequence == 10);
  CHECK((*cps)[1].sequence == 20);
  auto v = (*trail)->VerifyChain();
  CHECK(v->message == "verified 1..25");
  CHECK(v->checkpoints_matched == 2);
}

TEST_CASE("Export writes JSON lines and a trailing checkpoint", "[audit][export]") {
  Fixture f;
  f.AppendN(52);
  const std::string out = f.dir.Sub("export.jsonl");
  auto cp = f.trail->Export(11, 40, out);
  REQUIRE(cp.ok());
  CHECK(cp->sequence == 40);
  const auto lines = Lines(out);
  REQUIRE(lines.size() == 31);
  auto first = nlohmann::json::parse(lines[0]);
  CHECK(first["Sequence"] == 11);
  CHECK(nlohmann::json::parse(lines[29])["Sequence"] == 40);
  auto trailer = nlohmann::json::parse(lines[30]);
  CHECK(trailer["Checkpoint"]["Sequence"] == 40);
  CHECK(trailer["Checkpoint"]["Hash"] == nlohmann::json::parse(lines[29])["Hash"]);
  struct stat st {};
  REQUIRE(::stat(out.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  // An exported file verifies on its own: each line's hash over its canonical bytes and link.
  auto rec10 = f.trail->Tail(9, 1);
  ChainWalker walker(10, rec10->records[0].hash, false);
  walker.AddCheckpoint(*ReadCheckpointFile(out));
  for (size_t i = 0; i + 1 < lines.size(); ++i) REQUIRE(walker.Feed(11 + i, lines[i]));
  CHECK(walker.Finish().message == "verified 11..40; matches the checkpoint at 40");

  SECTION("the export's checkpoint is stored, and the file is a valid checkpoint source") {
    auto cps = f.trail->ListCheckpoints();
    REQUIRE(cps->size() == 1);
    CHECK((*cps)[0].sequence == 40);
    auto v = f.trail->VerifyChain(*ReadCheckpointFile(out));
    CHECK(v->ok);
  }
  SECTION("whole trail by default; never over an existing file; not past the head") {
    auto all = f.trail->Export(0, 0, f.dir.Sub("all.jsonl"));
    REQUIRE(all.ok());
    CHECK(all->sequence == 52);
    CHECK(Lines(f.dir.Sub("all.jsonl")).size() == 53);
    CHECK(f.trail->Export(0, 0, out).error().code() == Code::kAlreadyExists);
    CHECK(f.trail->Export(1, 60, f.dir.Sub("x")).error().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("Prune keeps an anchor that the rest verifies from", "[audit][prune]") {
  Fixture f;
  f.AppendN(52);
  CHECK(f.trail->Prune(40).code() == Code::kFailedPrecondition);  // not exported/checkpointed
  REQUIRE(f.trail->Export(1, 40, f.dir.Sub("1-40.jsonl")).ok());
  REQUIRE(f.trail->Prune(40).ok());

  auto rest = f.trail->Tail(0, 100);
  REQUIRE(rest->records.size() == 12);
  CHECK(rest->records[0].record.sequence == 41);
  auto v = f.trail->VerifyChain();
  REQUIRE(v.ok());
  CHECK(v->ok);
  CHECK(v->message == "verified 41..52 from anchor at 40");

  CHECK(f.trail->Prune(40).code() == Code::kFailedPrecondition);  // already
  CHECK(f.trail->Export(1, 52, f.dir.Sub("x")).error().code() == Code::kFailedPrecondition);

  SECTION("appends continue the chain after a reopen") {
    f.Reopen();
    f.AppendN(3, 53);
    CHECK(f.trail->VerifyChain()->message == "verified 41..55 from anchor at 40");
  }
  SECTION("the exported part plus the anchor still checks against its checkpoint") {
    auto v2 = f.trail->VerifyChain(*ReadCheckpointFile(f.dir.Sub("1-40.jsonl")));
    CHECK(v2->message == "verified 41..52 from anchor at 40; matches the checkpoint at 40");
  }
  SECTION("pruning everything leaves an anchor and an empty, appendable trail") {
    REQUIRE(f.trail->MakeCheckpoint().ok());
    REQUIRE(f.trail->Prune(52).ok());
    CHECK(f.trail->VerifyChain()->message == "verified: no records after anchor at 52");
    f.AppendN(1, 53);
    CHECK(f.trail->VerifyChain()->message == "verified 53..53 from anchor at 52");
  }
}

TEST_CASE("the interim sink's layout is refused, not mixed in", "[audit]") {
  AuditTempDir dir;
  auto env = Env::Open(dir.Sub("state"));
  REQUIRE(env.ok());
  {
    auto meta = (*env)->OpenDb("audit_meta", true);
    auto txn = (*env)->BeginWrite();
    REQUIRE(txn->Put(*meta, "next_sequence", "5").ok());
    REQUIRE(txn->Commit().ok());
  }
  auto t = AuditTrail::Open(**env, QuietOptions(nullptr));
  REQUIRE_FALSE(t.ok());
  CHECK(t.error().code() == Code::kFailedPrecondition);
}

TEST_CASE("the journal copy starts and stops cleanly", "[audit][journal]") {
  AuditTempDir dir;
  auto env = Env::Open(dir.Sub("state"));
  AuditTrail::Options o = QuietOptions(nullptr);
  o.journal = AuditTrail::Journal::kOn;  // without journald the sends fail quietly
  auto t = AuditTrail::Open(**env, o);
  REQUIRE(t.ok());
  REQUIRE((*t)->Append(SampleRecord(1)).ok());
  t->reset();
}

}  // namespace
}  // namespace kmsfs::keyd
