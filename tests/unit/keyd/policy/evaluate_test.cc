// Evaluate: one table of requests against the example policies in tests/testdata/policies/good.
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "keyd/policy/policy.h"
#include "tests/catch.h"
#include "tests/unit/keyd/policy/fake_name_resolver.h"

namespace kmsfs::keyd {
namespace {

using namespace std::string_literals;
using testing::FakeNameResolver;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Compiles every policy the table names, once: good/*.json by stem, plus the built-in ones.
const CompiledPolicy& PolicyNamed(const std::string& name) {
  static std::map<std::string, CompiledPolicy> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  std::string text;
  if (name == "default") {
    text = DefaultKeyPolicy();
  } else if (name == "owner1000") {
    text = VolumeOwnerPolicy(1000);
  } else {
    text = ReadFile(std::string(KMSFS_TESTDATA_DIR) + "/policies/good/" + name + ".json");
  }
  auto parsed = CompiledPolicy::Parse(text);
  INFO(name << ": " << (parsed.ok() ? "" : parsed.error().message()));
  REQUIRE(parsed.ok());
  return cache.emplace(name, std::move(*parsed)).first->second;
}

// Request builder: Req(Action::kDecrypt, 1000, 1000).Path("/a").Unit("x.service").
struct Req {
  AuthzRequest r;
  Req(Action a, uint32_t uid, uint32_t gid) {
    r.action = a;
    r.uid = uid;
    r.gid = gid;
    r.pid = 4242;
  }
  Req& Path(std::string p) {
    r.path = std::move(p);
    return *this;
  }
  Req& Unit(std::string u) {
    r.unit = std::move(u);
    return *this;
  }
  Req& Exe(std::string e) {
    r.executable = std::move(e);
    return *this;
  }
  Req& Volume(std::string v) {
    r.volume = std::move(v);
    return *this;
  }
  Req& Forwarded() {
    r.forwarded = true;
    return *this;
  }
  Req& Groups(std::vector<uint32_t> g) {
    r.supplementary_gids = std::move(g);
    return *this;
  }
  Req& Ctx(std::string k, std::string v) {
    r.encryption_context[std::move(k)] = std::move(v);
    return *this;
  }
  operator AuthzRequest() const { return r; }  // NOLINT: table sugar
};
Req Root(Action a) { return Req(a, 0, 0); }
Req Alice(Action a) { return Req(a, 1000, 1000); }
Req Bob(Action a) { return Req(a, 1001, 1001); }
Req Carol(Action a) { return Req(a, 1002, 1002); }
Req Postgres(Action a) { return Req(a, 105, 108); }

constexpr Effect kA = Effect::kAllow;
constexpr Effect kD = Effect::kDeny;
constexpr bool kExplicit = true;
constexpr bool kDefault = false;

struct Case {
  const char* name;
  const char* policy;
  AuthzRequest request;
  Effect effect;
  bool is_explicit;
  const char* sid;     // expected Decision::sid ("" = none)
  const char* reason;  // must occur in Decision::reason ("" = not checked)
};

using A = Action;

const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      // --- per-user home directories (homes.json) ---------------------------------------------
      {"alice decrypts her file", "homes", Alice(A::kDecrypt).Path("/alice/notes.txt"), kA,
       kExplicit, "AliceHome",
       "statement \"AliceHome\" allows kms:Decrypt for uid 1000 on /alice/notes.txt"},
      {"GenerateDataKey* covers GenerateDataKey", "homes",
       Alice(A::kGenerateDataKey).Path("/alice/n"), kA, kExplicit, "AliceHome", ""},
      {"GenerateDataKey* covers ...WithoutPlaintext", "homes",
       Alice(A::kGenerateDataKeyWithoutPlaintext).Path("/alice/n"), kA, kExplicit, "AliceHome", ""},
      {"alice may not decrypt bob's file", "homes", Alice(A::kDecrypt).Path("/bob/x"), kD, kDefault,
       "", "no statement allows kms:Decrypt for uid 1000 on /bob/x"},
      {"bob decrypts his file", "homes", Bob(A::kDecrypt).Path("/bob/x"), kA, kExplicit, "BobHome",
       ""},
      {"action not granted: Encrypt", "homes", Alice(A::kEncrypt).Path("/alice/x"), kD, kDefault,
       "", "no statement allows kms:Encrypt"},
      {"root administers with kms:*", "homes", Root(A::kPutKeyPolicy), kA, kExplicit,
       "RootAdministers", ""},
      {"explicit Deny beats root's kms:*", "homes", Root(A::kDecrypt).Path("/alice/secret/k"), kD,
       kExplicit, "NoOneReadsSecrets",
       "statement \"NoOneReadsSecrets\" denies kms:Decrypt for uid 0 on /alice/secret/k"},
      {"explicit Deny beats alice's own Allow", "homes",
       Alice(A::kDecrypt).Path("/alice/secret/deep/k"), kD, kExplicit, "NoOneReadsSecrets", ""},
      {"Deny is action-scoped", "homes", Alice(A::kGenerateDataKey).Path("/alice/secret/new"), kA,
       kExplicit, "AliceHome", ""},
      {"no prefix confusion: /alicex", "homes", Alice(A::kDecrypt).Path("/alicex/y"), kD, kDefault,
       "", ""},
      {"'**' matches the directory itself", "homes", Alice(A::kDecrypt).Path("/alice"), kA,
       kExplicit, "AliceHome", ""},
      {"traversal /alice/../bob/x refused", "homes", Alice(A::kDecrypt).Path("/alice/../bob/x"), kD,
       kDefault, "", "request path rejected: path has a \"..\" component"},
      {"traversal refused even for root", "homes", Root(A::kDecrypt).Path("/a/../b"), kD, kDefault,
       "", "\"..\""},
      {"traversal out of a Deny refused", "homes", Alice(A::kDecrypt).Path("/alice/secret/../x"),
       kD, kDefault, "", "\"..\""},
      {"/./ is resolved", "homes", Alice(A::kDecrypt).Path("/alice/./notes.txt"), kA, kExplicit,
       "AliceHome", "on /alice/notes.txt"},
      {"// is collapsed", "homes", Alice(A::kDecrypt).Path("//alice//notes.txt"), kA, kExplicit,
       "AliceHome", "on /alice/notes.txt"},
      {"trailing slash is dropped", "homes", Alice(A::kDecrypt).Path("/alice/dir/"), kA, kExplicit,
       "AliceHome", "on /alice/dir"},
      {"Deny still matches via /./", "homes", Alice(A::kDecrypt).Path("/alice/./secret/k"), kD,
       kExplicit, "NoOneReadsSecrets", ""},
      {"Deny still matches via //", "homes", Alice(A::kDecrypt).Path("//alice//secret//k"), kD,
       kExplicit, "NoOneReadsSecrets", ""},
      {"NUL in path refused", "homes", Alice(A::kDecrypt).Path("/alice/x\0/../../bob/y"s), kD,
       kDefault, "", "NUL"},
      {"relative path refused", "homes", Alice(A::kDecrypt).Path("alice/x"), kD, kDefault, "",
       "not absolute"},
      {"empty path refused", "homes", Alice(A::kDecrypt).Path(""), kD, kDefault, "", "empty"},
      {"over-long path refused", "homes",
       Alice(A::kDecrypt).Path("/alice/" + std::string(5000, 'a')), kD, kDefault, "",
       "longer than 4096"},
      {"no path: path conditions do not match", "homes", Alice(A::kDecrypt), kD, kDefault, "",
       "no statement allows kms:Decrypt for uid 1000"},
      {"group member via the group database", "homes", Bob(A::kDecrypt).Path("/shared/a.txt"), kA,
       kExplicit, "StaffReadShared", ""},
      {"'*' does not cross '/'", "homes", Bob(A::kDecrypt).Path("/shared/sub/a.txt"), kD, kDefault,
       "", ""},
      {"non-member", "homes", Carol(A::kDecrypt).Path("/shared/a.txt"), kD, kDefault, "", ""},
      {"kernel groups are authoritative (bob dropped staff)", "homes",
       Bob(A::kDecrypt).Path("/shared/a.txt").Groups({}), kD, kDefault, "", ""},
      {"supplementary group grants", "homes", Carol(A::kDecrypt).Path("/shared/a.txt").Groups({50}),
       kA, kExplicit, "StaffReadShared", ""},
      {"group database down: Allow not applied", "homes",
       Req(A::kDecrypt, 2001, 2001).Path("/shared/a.txt"), kD, kDefault, "",
       "StaffReadShared\" not applied on doubt: Statement[3].Principal.Group: the caller's groups "
       "could not be determined"},
      {"uid without passwd entry matches no User", "homes",
       Req(A::kDecrypt, 4242, 4242).Path("/alice/x"), kD, kDefault, "", ""},
      {"unset uid is nobody, never root", "homes", Req(A::kDecrypt, kNoId, 0).Path("/alice/x"), kD,
       kDefault, "", "caller uid/gid not set"},
      {"unset gid", "homes", Req(A::kPutKeyPolicy, 0, kNoId), kD, kDefault, "", "not set"},

      // --- only postgresql.service (postgresql.json) -------------------------------------------
      {"postgresql.service decrypts its data", "postgresql",
       Postgres(A::kDecrypt).Unit("postgresql.service").Path("/postgresql/base/1"), kA, kExplicit,
       "PostgresDataOnlyForPostgres", ""},
      {"root in a login session is denied", "postgresql",
       Root(A::kDecrypt).Unit("session-1.scope").Path("/postgresql/base/1"), kD, kExplicit,
       "NobodyElseReadsPostgresData", ""},
      {"unit unknown: negated Deny applies on doubt", "postgresql",
       Root(A::kDecrypt).Path("/postgresql/base/1"), kD, kExplicit, "NobodyElseReadsPostgresData",
       "applied on doubt: Statement[1].Condition.StringNotEquals.kmsfs:Unit"},
      {"postgres outside its tree", "postgresql",
       Postgres(A::kDecrypt).Unit("postgresql.service").Path("/etc/x"), kD, kDefault, "", ""},
      {"Unit principal with unit unknown is not allowed", "postgresql",
       Postgres(A::kGenerateDataKey).Path("/postgresql/x"), kD, kDefault, "",
       "not applied on doubt: Statement[0].Principal.Unit: the caller's systemd unit could not be "
       "determined"},
      {"other unit: GenerateDataKey not denied, not allowed", "postgresql",
       Root(A::kGenerateDataKey).Unit("session-1.scope").Path("/postgresql/x"), kD, kDefault, "",
       ""},

      // --- explicit deny of a path (deny_path.json) --------------------------------------------
      {"staff decrypt an ordinary file", "deny_path", Alice(A::kDecrypt).Path("/projects/x"), kA,
       kExplicit, "StaffUseTheVolume", ""},
      {"payroll denied even to root", "deny_path", Root(A::kDecrypt).Path("/hr/payroll/2024.ods"),
       kD, kExplicit, "PayrollIsOffLimits", ""},
      {"the Deny sees through // and /./", "deny_path",
       Alice(A::kDecrypt).Path("/hr//payroll/./2024.ods"), kD, kExplicit, "PayrollIsOffLimits",
       "on /hr/payroll/2024.ods"},
      {"the Deny covers the directory itself", "deny_path", Alice(A::kDecrypt).Path("/hr/payroll"),
       kD, kExplicit, "PayrollIsOffLimits", ""},
      {"'..' out of the denied tree is refused", "deny_path",
       Alice(A::kDecrypt).Path("/hr/payroll/../x"), kD, kDefault, "", "\"..\""},
      {"path-less request is not caught by a path Deny", "deny_path", Alice(A::kDecrypt), kA,
       kExplicit, "StaffUseTheVolume", ""},
      {"the Deny covers only Decrypt", "deny_path",
       Alice(A::kGenerateDataKey).Path("/hr/payroll/n"), kA, kExplicit, "StaffUseTheVolume", ""},

      // --- Deny with a negated path condition (deny_negated.json) -----------------------------
      {"public file", "deny_negated", Carol(A::kDecrypt).Path("/public/x"), kA, kExplicit,
       "EveryoneDecrypts", ""},
      {"StringNotLike Deny", "deny_negated", Carol(A::kDecrypt).Path("/private/x"), kD, kExplicit,
       "OnlyPublicFiles", ""},
      {"no path under a negated Deny: applied on doubt", "deny_negated", Carol(A::kDecrypt), kD,
       kExplicit, "OnlyPublicFiles", "applied on doubt"},

      // --- condition operators (conditions.json) ------------------------------------------------
      {"NumericLessThan", "conditions", Postgres(A::kDescribeKey), kA, kExplicit, "LowUids", ""},
      {"NumericLessThan boundary", "conditions", Alice(A::kDescribeKey), kD, kDefault, "", ""},
      {"Bool and StringEquals ANDed", "conditions", Alice(A::kDecrypt).Forwarded().Volume("vol1"),
       kA, kExplicit, "ForwardedOnVol1", ""},
      {"Bool false", "conditions", Alice(A::kDecrypt).Volume("vol1"), kD, kDefault, "", ""},
      {"volume absent", "conditions", Alice(A::kDecrypt).Forwarded(), kD, kDefault, "", ""},
      {"encryption context matches", "conditions", Alice(A::kEncrypt).Ctx("app", "billing"), kA,
       kExplicit, "BillingContext", ""},
      {"encryption context key missing", "conditions", Alice(A::kEncrypt).Ctx("other", "billing"),
       kD, kDefault, "", ""},
      {"encryption context value is case-sensitive", "conditions",
       Alice(A::kEncrypt).Ctx("app", "Billing"), kD, kDefault, "", ""},
      {"ForAllValues: subset", "conditions",
       Alice(A::kGenerateDataKeyWithoutPlaintext).Ctx("app", "a").Ctx("tenant", "t"), kA, kExplicit,
       "OnlyKnownContextKeys", ""},
      {"ForAllValues: extra key", "conditions",
       Alice(A::kGenerateDataKeyWithoutPlaintext).Ctx("app", "a").Ctx("other", "o"), kD, kDefault,
       "", ""},
      {"ForAllValues on no context fails closed (AWS: true)", "conditions",
       Alice(A::kGenerateDataKeyWithoutPlaintext), kD, kDefault, "", "not applied on doubt"},
      {"IfExists: absent executable", "conditions", Alice(A::kReEncryptFrom), kA, kExplicit,
       "SystemBinariesIfKnown", ""},
      {"IfExists: matching executable", "conditions",
       Alice(A::kReEncryptFrom).Exe("/usr/bin/python3"), kA, kExplicit, "SystemBinariesIfKnown",
       ""},
      {"IfExists: other executable", "conditions", Alice(A::kReEncryptFrom).Exe("/tmp/evil"), kD,
       kDefault, "", ""},
      {"Null true: no path", "conditions", Alice(A::kReEncryptTo), kA, kExplicit, "OnlyWithoutPath",
       ""},
      {"Null true: with path", "conditions", Alice(A::kReEncryptTo).Path("/x"), kD, kDefault, "",
       ""},
      {"NumericEquals on the caller's groups", "conditions", Bob(A::kGetKeyPolicy), kA, kExplicit,
       "StaffGid", ""},
      {"NumericEquals: not in group", "conditions", Carol(A::kGetKeyPolicy), kD, kDefault, "", ""},
      {"StringNotEquals User: alice", "conditions", Alice(A::kGetKeyRotationStatus), kA, kExplicit,
       "AnyoneButBob", ""},
      {"StringNotEquals User: bob", "conditions", Bob(A::kGetKeyRotationStatus), kD, kDefault, "",
       ""},
      {"user without a name: unknown, not 'not bob'", "conditions",
       Req(A::kGetKeyRotationStatus, 4242, 4242), kD, kDefault, "", "not applied on doubt"},
      {"user lookup failure", "conditions", Req(A::kGetKeyRotationStatus, 2000, 2000), kD, kDefault,
       "", "user name lookup failed"},
      {"StringEquals on group names", "conditions", Alice(A::kListKeyRotations), kA, kExplicit,
       "StaffByName", ""},
      {"StringNotEquals on group names, ANDed with NumericGreaterThan", "conditions",
       Carol(A::kListKeyRotations), kA, kExplicit, "NotStaff", ""},
      {"group name unknown: neither Equals nor NotEquals applies", "conditions",
       Req(A::kListKeyRotations, 1003, 77), kD, kDefault, "", "not applied on doubt"},
      {"StringEqualsIgnoreCase", "conditions", Alice(A::kCreateAlias).Ctx("env", "prod"), kA,
       kExplicit, "ProdAnyCase", ""},
      {"StringEqualsIgnoreCase mismatch", "conditions",
       Alice(A::kCreateAlias).Ctx("env", "production"), kD, kDefault, "", ""},
      {"NumericNotEquals is a NOR: alice", "conditions", Alice(A::kUpdateAlias), kA, kExplicit,
       "NotRootNorBob", ""},
      {"NumericNotEquals is a NOR: bob", "conditions", Bob(A::kUpdateAlias), kD, kDefault, "", ""},
      {"NumericNotEquals is a NOR: root", "conditions", Root(A::kUpdateAlias), kD, kDefault, "",
       ""},
      {"StringLike on a volume", "conditions", Alice(A::kDeleteAlias).Volume("vol-eu-prod"), kA,
       kExplicit, "ProdVolumes", ""},
      {"StringLike on a volume: mismatch", "conditions",
       Alice(A::kDeleteAlias).Volume("vol-eu-dev"), kD, kDefault, "", ""},
      {"two numeric operators ANDed: inside", "conditions", Bob(A::kUpdateKeyDescription), kA,
       kExplicit, "UidWindow", ""},
      {"two numeric operators ANDed: outside", "conditions", Carol(A::kUpdateKeyDescription), kD,
       kDefault, "", ""},

      // --- NotAction (not_action.json) ----------------------------------------------------------
      {"NotAction allows the rest", "not_action", Alice(A::kDecrypt), kA, kExplicit,
       "AliceEverythingButAdministration", ""},
      {"NotAction excludes PutKeyPolicy", "not_action", Alice(A::kPutKeyPolicy), kD, kDefault, "",
       ""},
      {"NotAction excludes kms:*Alias", "not_action", Alice(A::kCreateAlias), kD, kDefault, "", ""},
      {"Deny NotAction spares DescribeKey", "not_action", Bob(A::kDescribeKey), kA, kExplicit,
       "BobEverything", ""},
      {"Deny NotAction denies the rest", "not_action", Bob(A::kDecrypt), kD, kExplicit,
       "BobMayOnlyDescribe", ""},

      // --- administration (admin.json) ----------------------------------------------------------
      {"wheel member administers", "admin", Alice(A::kPutKeyPolicy), kA, kExplicit,
       "WheelAdministers", ""},
      {"root via wheel", "admin", Root(A::kDisableKey), kA, kExplicit, "WheelAdministers", ""},
      {"RotateKeyOnDemand", "admin", Alice(A::kRotateKeyOnDemand), kA, kExplicit,
       "WheelAdministers", ""},
      {"non-admin", "admin", Carol(A::kEnableKey), kD, kDefault, "", ""},
      {"admin actions need the group in the kernel's list", "admin",
       Alice(A::kPutKeyPolicy).Groups({}), kD, kDefault, "", ""},
      {"alias actions not granted to admins", "admin", Alice(A::kCreateAlias), kD, kDefault, "",
       ""},
      {"Deny with an unresolvable group applies on doubt", "admin", Root(A::kScheduleKeyDeletion),
       kD, kExplicit, "DirectoryGroupMayNotDelete",
       "applied on doubt: Statement[3].Principal.Group: group lookup failed"},
      {"user list with one name that does not exist", "admin", Alice(A::kDecrypt), kA, kExplicit,
       "Users", ""},
      {"Allow with a failing user lookup is not applied", "admin", Carol(A::kEncrypt), kD, kDefault,
       "",
       "statement \"DirectoryUsers\" not applied on doubt: Statement[2].Principal.User[1]: user "
       "lookup failed"},
      {"statement without Sid is named by index", "admin", Carol(A::kDecrypt), kD, kExplicit,
       "Statement[4]", "Statement[4] denies kms:Decrypt for uid 1002"},

      // --- built-in policies --------------------------------------------------------------------
      {"default policy: root uses the key", "default", Root(A::kDecrypt).Path("/x"), kA, kExplicit,
       "RootAdministersAndUsesTheKey", ""},
      {"default policy: root administers", "default", Root(A::kScheduleKeyDeletion), kA, kExplicit,
       "RootAdministersAndUsesTheKey", ""},
      {"default policy: nobody else", "default", Alice(A::kDescribeKey), kD, kDefault, "", ""},
      {"volume owner decrypts", "owner1000", Alice(A::kDecrypt).Path("/x"), kA, kExplicit,
       "VolumeOwnerUsesTheKey", ""},
      {"volume owner GenerateDataKeyWithoutPlaintext", "owner1000",
       Alice(A::kGenerateDataKeyWithoutPlaintext), kA, kExplicit, "VolumeOwnerUsesTheKey", ""},
      {"volume owner ReEncryptTo", "owner1000", Alice(A::kReEncryptTo), kA, kExplicit,
       "VolumeOwnerUsesTheKey", ""},
      {"volume owner does not administer", "owner1000", Alice(A::kPutKeyPolicy), kD, kDefault, "",
       ""},
      {"volume owner cannot Encrypt arbitrary data", "owner1000", Alice(A::kEncrypt), kD, kDefault,
       "", ""},
      {"other users get nothing", "owner1000", Bob(A::kDecrypt).Path("/x"), kD, kDefault, "", ""},
      {"root administers the volume key", "owner1000", Root(A::kScheduleKeyDeletion), kA, kExplicit,
       "RootAdministersAndUsesTheKey", ""},

      // --- glob semantics (globs.json) ----------------------------------------------------------
      {"'*': one component", "globs", Carol(A::kDecrypt).Path("/one/a"), kA, kExplicit, "OneLevel",
       ""},
      {"'*': not two", "globs", Carol(A::kDecrypt).Path("/one/a/b"), kD, kDefault, "", ""},
      {"'**': zero components", "globs", Carol(A::kDecrypt).Path("/deep/leaf"), kA, kExplicit,
       "AnyDepth", ""},
      {"'**': many components", "globs", Carol(A::kDecrypt).Path("/deep/a/b/leaf"), kA, kExplicit,
       "AnyDepth", ""},
      {"'**': last component must still match", "globs", Carol(A::kDecrypt).Path("/deep/a/leafx"),
       kD, kDefault, "", ""},
      {"'?': one character", "globs", Carol(A::kDecrypt).Path("/q/file1.db"), kA, kExplicit,
       "OneChar", ""},
      {"'?': not two", "globs", Carol(A::kDecrypt).Path("/q/file12.db"), kD, kDefault, "", ""},
      {"case-sensitive", "globs", Carol(A::kDecrypt).Path("/q/FILE1.db"), kD, kDefault, "", ""},
      {"'?': one UTF-8 character", "globs", Carol(A::kDecrypt).Path("/q/file\xc3\xa9.db"), kA,
       kExplicit, "OneChar", ""},
      {"'*' in two components", "globs", Carol(A::kDecrypt).Path("/m/a/x/b.log"), kA, kExplicit,
       "Middle", ""},
      {"'*' in two components: extra level", "globs", Carol(A::kDecrypt).Path("/m/a/b/x/c.log"), kD,
       kDefault, "", ""},
      {"StringEquals on a path", "globs", Carol(A::kDecrypt).Path("/exact/file"), kA, kExplicit,
       "ExactFile", ""},
      {"StringEquals on a normalized path", "globs", Carol(A::kDecrypt).Path("/exact//file/"), kA,
       kExplicit, "ExactFile", ""},
      {"StringEquals on a path is case-sensitive", "globs", Carol(A::kDecrypt).Path("/exact/File"),
       kD, kDefault, "", ""},
      {"AWS '*' crosses '/' outside kmsfs:Path", "globs", Carol(A::kEncrypt).Exe("/usr/lib/x/y"),
       kA, kExplicit, "ToolsAnywhereUnderUsr", ""},
      {"executable unknown", "globs", Carol(A::kEncrypt), kD, kDefault, "", ""},

      // --- an AWS-shaped policy (aws_shaped.json) -----------------------------------------------
      {"ForAnyValue + StringEqualsIfExists", "aws_shaped", Alice(A::kEncrypt).Ctx("tenant", "acme"),
       kA, kExplicit, "Allow use of the key", "statement \"Allow use of the key\" allows"},
      {"context value not listed", "aws_shaped", Alice(A::kEncrypt).Ctx("tenant", "initech"), kD,
       kDefault, "", ""},
      {"ForAnyValue on no context is false", "aws_shaped", Alice(A::kEncrypt), kD, kDefault, "",
       ""},
      {"BoolIfExists false vs a forwarded request", "aws_shaped",
       Alice(A::kEncrypt).Ctx("tenant", "acme").Forwarded(), kD, kDefault, "", ""},
      {"principal by group", "aws_shaped", Carol(A::kDecrypt).Groups({50}).Ctx("tenant", "globex"),
       kA, kExplicit, "Allow use of the key", ""},
      {"quoted uid", "aws_shaped", Root(A::kRetireKeyVersion), kA, kExplicit,
       "Enable root permissions", ""},
  };
  return cases;
}

TEST_CASE("Evaluate: the decision table", "[policy][evaluate]") {
  REQUIRE(Cases().size() >= 60);
  FakeNameResolver resolver;
  for (const Case& c : Cases()) {
    INFO("case: " << c.name << " (policy " << c.policy << ")");
    const Decision d = Evaluate(PolicyNamed(c.policy), c.request, resolver);
    INFO("reason: " << d.reason);
    CHECK(d.effect == c.effect);
    CHECK(d.is_explicit == c.is_explicit);
    CHECK(d.sid == c.sid);
    CHECK((d.statement_index >= 0) == c.is_explicit);
    CHECK_FALSE(d.reason.empty());
    CHECK(d.reason.find(c.reason) != std::string::npos);
  }
}

TEST_CASE("Evaluate: the default-deny reason is one exact sentence", "[policy][evaluate]") {
  FakeNameResolver resolver;
  const Decision d = Evaluate(PolicyNamed("homes"), Alice(A::kDecrypt).Path("/bob/x"), resolver);
  CHECK(d.reason == "no statement allows kms:Decrypt for uid 1000 on /bob/x");
  CHECK(d.statement_index == -1);
}

TEST_CASE("Evaluate: control characters in a path do not reach the reason raw",
          "[policy][evaluate]") {
  FakeNameResolver resolver;
  const Decision d =
      Evaluate(PolicyNamed("homes"), Alice(A::kDecrypt).Path("/bob/x\ny\x1b[31m"), resolver);
  CHECK_FALSE(d.allowed());
  CHECK(d.reason.find('\n') == std::string::npos);
  CHECK(d.reason.find('\x1b') == std::string::npos);
  CHECK(d.reason.find("x\\x0ay\\x1b[31m") != std::string::npos);
}

TEST_CASE("Evaluate: uid-only policies never consult the name database", "[policy][evaluate]") {
  FakeNameResolver resolver;
  for (int i = 0; i < 3; ++i) {
    CHECK(Evaluate(PolicyNamed("default"), Alice(A::kDecrypt).Path("/x"), resolver).effect == kD);
    CHECK(Evaluate(PolicyNamed("owner1000"), Alice(A::kDecrypt).Path("/x"), resolver).allowed());
  }
  CHECK(resolver.calls == 0);
}

TEST_CASE("Evaluate: each caller fact is looked up at most once per request",
          "[policy][evaluate]") {
  FakeNameResolver resolver;
  // conditions.json asks for group names in two statements and the gid list in three.
  (void)Evaluate(PolicyNamed("conditions"), Carol(A::kListKeyRotations), resolver);
  // GroupsOf once, GroupName once per gid (carol has one group).
  CHECK(resolver.calls == 2);
}

// A resolver that breaks its contract by throwing: Evaluate must still answer, and answer Deny.
class ThrowingResolver final : public StaticNameResolver {
 public:
  Result<std::optional<uint32_t>> UidForUser(std::string_view) const override {
    throw std::runtime_error("boom");
  }
};

TEST_CASE("Evaluate: an exception inside evaluation becomes a Deny", "[policy][evaluate]") {
  ThrowingResolver resolver;
  const Decision d = Evaluate(PolicyNamed("homes"), Alice(A::kDecrypt).Path("/alice/x"), resolver);
  CHECK(d.effect == kD);
  CHECK_FALSE(d.is_explicit);
  CHECK(d.reason == "internal error");
}

TEST_CASE("Evaluate: an unset or out-of-range action is refused", "[policy][evaluate]") {
  FakeNameResolver resolver;
  AuthzRequest unset;  // only the identity filled in: root, who may do anything
  unset.uid = 0;
  unset.gid = 0;
  AuthzRequest bogus = Root(A::kDecrypt);
  bogus.action = static_cast<Action>(200);
  for (const AuthzRequest& r : {unset, bogus}) {
    const Decision d = Evaluate(PolicyNamed("default"), r, resolver);
    CHECK(d.effect == kD);
    CHECK_FALSE(d.is_explicit);
    CHECK(d.reason == "request refused: unknown action");
  }
}

// --- CheckLockout -------------------------------------------------------------------------------

TEST_CASE("CheckLockout refuses policies that lock the caller out", "[policy][lockout]") {
  FakeNameResolver resolver;
  struct Row {
    const char* name;
    const char* policy;
    AuthzRequest caller;
    bool ok;
    const char* message;
  };
  const Row rows[] = {
      {"root keeps the default policy", "default", Root(A::kPutKeyPolicy), true, ""},
      {"alice would lock herself out of the default policy", "default", Alice(A::kPutKeyPolicy),
       false,
       "the new key policy would not allow the caller (uid 1000) to change it again: no statement "
       "allows kms:PutKeyPolicy; set BypassPolicyLockoutSafetyCheck to put it anyway"},
      {"volume owner cannot put the owner policy", "owner1000", Alice(A::kPutKeyPolicy), false,
       "uid 1000"},
      {"root can", "owner1000", Root(A::kPutKeyPolicy), true, ""},
      {"wheel membership counts", "admin", Alice(A::kPutKeyPolicy), true, ""},
      {"the action in the caller request is ignored", "admin", Alice(A::kDecrypt), true, ""},
      {"wheel membership from the kernel's list", "admin", Alice(A::kPutKeyPolicy).Groups({}),
       false, "no statement allows kms:PutKeyPolicy"},
      {"NotAction that excludes PutKeyPolicy", "not_action", Alice(A::kPutKeyPolicy), false, ""},
      {"a path never appears in the message", "default",
       Alice(A::kPutKeyPolicy).Path("/secret-name"), false, ""},
  };
  for (const Row& r : rows) {
    INFO(r.name);
    const Status s = CheckLockout(PolicyNamed(r.policy), r.caller, resolver);
    CHECK(s.ok() == r.ok);
    if (!s.ok()) {
      CHECK(s.code() == Code::kInvalidArgument);
      CHECK(s.error().message().find(r.message) != std::string::npos);
      CHECK(s.error().message().find("secret-name") == std::string::npos);
    }
  }

  auto deny_root = CompiledPolicy::Parse(R"({"Version": "2012-10-17", "Statement": [
      {"Sid": "RootAll", "Effect": "Allow", "Principal": {"Uid": 0}, "Action": "kms:*"},
      {"Sid": "NoMorePolicyChanges", "Effect": "Deny", "Principal": "*", "Action": "kms:PutKeyPolicy"}]})");
  REQUIRE(deny_root.ok());
  const Status s = CheckLockout(*deny_root, Root(A::kPutKeyPolicy), resolver);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().message().find("NoMorePolicyChanges denies kms:PutKeyPolicy") !=
        std::string::npos);
}

}  // namespace
}  // namespace kmsfs::keyd
