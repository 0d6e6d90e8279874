// Test harness for keyd/service: real LMDB in a temp dir, a fake clock, recording/failing sinks.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/format/base64.h"
#include "common/format/wrapped_blob.h"
#include "keyd/audit/simple_audit_sink.h"
#include "keyd/audit/transactional_audit_sink.h"
#include "keyd/policy/static_name_resolver.h"
#include "keyd/service/kms_service.h"
#include "keyd/store/key_store.h"
#include "tests/catch.h"
#include "tests/unit/keyd/store/store_test_util.h"

namespace kmsfs::keyd::testing {

using nlohmann::json;

// Keeps every appended record in memory. Not transactional: exercises the service's
// "append after the change" path.
class RecordingAuditSink : public AuditSink {
 public:
  Status Append(AuditRecord record) override {
    std::lock_guard<std::mutex> lock(mu_);
    record.sequence = records_.size() + 1;
    records_.push_back(std::move(record));
    return Status::Ok();
  }
  std::vector<AuditRecord> records() const {
    std::lock_guard<std::mutex> lock(mu_);
    return records_;
  }
  AuditRecord last() const {
    std::lock_guard<std::mutex> lock(mu_);
    REQUIRE(!records_.empty());
    return records_.back();
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return records_.size();
  }

 private:
  mutable std::mutex mu_;
  std::vector<AuditRecord> records_;
};

// Fails every append while `failing` is set (the disk is full, the audit DB is broken, ...).
// Transactional, so that both of the service's audit paths can be made to fail.
class FailingAuditSink : public TransactionalAuditSink {
 public:
  std::atomic<bool> failing{true};
  std::atomic<int> attempts{0};
  Status Append(AuditRecord record) override { return Attempt(std::move(record)); }
  Status AppendInTxn(WriteTxn&, AuditRecord record) override { return Attempt(std::move(record)); }
  RecordingAuditSink recorded;  // what got through while not failing

 private:
  Status Attempt(AuditRecord record) {
    ++attempts;
    if (failing) return Error(Code::kIo, "audit disk full (test)", 28);
    return recorded.Append(std::move(record));
  }
};

inline CallerContext Caller(uid_t uid, gid_t gid = 0) {
  CallerContext c;
  c.peer.uid = uid;
  c.peer.gid = gid == 0 && uid != 0 ? uid : gid;
  c.peer.pid = 4242;
  c.peer.executable = "/usr/bin/test";
  return c;
}
inline CallerContext Root() { return Caller(0, 0); }
inline CallerContext Alice() { return Caller(1000, 1000); }
inline CallerContext Bob() { return Caller(1001, 1001); }
// The filesystem (root) forwarding for `uid`, opening `path` inside the volume.
inline CallerContext Forwarded(uid_t uid, std::string path) {
  CallerContext c = Root();
  c.peer.executable = "/usr/bin/kmsfs";
  Principal p;
  p.uid = uid;
  p.gid = uid;
  p.pid = 777;
  p.executable = "/usr/bin/cat";
  c.on_behalf = p;
  c.path = std::move(path);
  return c;
}

enum class SinkKind { kRecording, kSimple, kFailing };

// One store + service in a fresh temp dir, sharing one fake clock.
struct Harness {
  TempDir dir;
  FakeClock clock;
  std::unique_ptr<KeyStore> store;
  StaticNameResolver resolver;
  RecordingAuditSink recording;
  FailingAuditSink failing;
  std::unique_ptr<SimpleAuditSink> simple;
  AuditSink* sink = nullptr;
  std::unique_ptr<KmsService> service;

  static KmsService::Options TestOptions() {
    KmsService::Options o;
    o.min_pending_window_days = 0;
    o.min_rotation_period_days = 1;
    return o;
  }

  explicit Harness(SinkKind kind = SinkKind::kRecording,
                   KmsService::Options options = TestOptions()) {
    KeyStore::Options so;
    so.clock = clock.Fn();
    auto s = KeyStore::Open(dir.Sub("state"), TestRootKey(7), std::move(so));
    if (!s.ok()) FAIL(s.error().ToString());
    store = std::move(s).value();
    resolver.AddUser("root", 0);
    resolver.AddUser("alice", 1000);
    resolver.AddUser("bob", 1001);
    resolver.AddGroup("staff", 50, {"alice"});
    switch (kind) {
      case SinkKind::kRecording:
        sink = &recording;
        break;
      case SinkKind::kFailing:
        sink = &failing;
        break;
      case SinkKind::kSimple: {
        SimpleAuditSink::Options ao;
        ao.clock_us = [this] { return clock.now.load() * 1000000; };
        auto a = SimpleAuditSink::Open(store->env(), std::move(ao));
        if (!a.ok()) FAIL(a.error().ToString());
        simple = std::move(a).value();
        sink = simple.get();
        break;
      }
    }
    auto svc = KmsService::Create(store.get(), sink, &resolver, clock.Fn(), std::move(options));
    if (!svc.ok()) FAIL(svc.error().ToString());
    service = std::move(svc).value();
  }

  ServiceReply Call(std::string_view op, const json& params = json::object(),
                    const CallerContext& caller = Root()) {
    return service->Handle(op, params, caller);
  }
  // Calls and requires success; returns the result.
  json Ok(std::string_view op, const json& params = json::object(),
          const CallerContext& caller = Root()) {
    ServiceReply r = Call(op, params, caller);
    INFO(op << " -> " << r.error_name << ": " << r.error_message);
    REQUIRE(r.ok());
    return r.result;
  }
  // Calls and requires the named error; returns its message.
  std::string Fails(std::string_view op, const json& params, std::string_view error_name,
                    const CallerContext& caller = Root()) {
    ServiceReply r = Call(op, params, caller);
    INFO(op << " -> " << (r.ok() ? r.result.dump() : r.error_name + ": " + r.error_message));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error_name == error_name);
    CHECK_FALSE(r.error_message.empty());
    CHECK_FALSE(r.result.contains("Plaintext"));
    return r.error_message;
  }
  std::string CreateKey(const json& params = json::object()) {
    return Ok("CreateKey", params)["KeyMetadata"]["KeyId"].get<std::string>();
  }
  // Every audit record so far, whichever sink is in use.
  std::vector<AuditRecord> Audit() const {
    if (simple) {
      auto r = simple->Read(0, 1000);
      REQUIRE(r.ok());
      return *r;
    }
    if (sink == &failing) return failing.recorded.records();
    return recording.records();
  }
  AuditRecord LastAudit() const {
    auto all = Audit();
    REQUIRE(!all.empty());
    return all.back();
  }
};

inline Bytes DecodeB64(const json& v) {
  auto b = format::Base64Decode(v.get<std::string>());
  REQUIRE(b.ok());
  return *b;
}
inline std::string B64(std::string_view s) { return format::Base64Encode(AsBytes(s)); }
// The (key id, version) a CiphertextBlob names.
inline std::pair<std::string, uint32_t> BlobKey(const json& blob_b64) {
  auto p = format::PeekWrappedBlobKey(DecodeB64(blob_b64));
  REQUIRE(p.ok());
  return *p;
}

}  // namespace kmsfs::keyd::testing
