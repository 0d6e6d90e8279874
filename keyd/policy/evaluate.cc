// Evaluate and CheckLockout: a compiled policy + a request -> Decision, failing closed on doubt.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "keyd/policy/policy.h"
#include "keyd/policy/policy_data.h"
#include "keyd/policy/text.h"

namespace kmsfs::keyd {
namespace {

using namespace policy_internal;  // NOLINT(google-build-using-namespace)

// Three-valued logic (Kleene). kUnknown means "keyd cannot tell": an Allow statement then does not
// apply and a Deny statement does. That single rule is the whole fail-closed story.
enum class Tri : uint8_t { kFalse, kTrue, kUnknown };

Tri FromBool(bool b) { return b ? Tri::kTrue : Tri::kFalse; }
Tri Not(Tri a) { return a == Tri::kUnknown ? a : FromBool(a == Tri::kFalse); }
Tri And(Tri a, Tri b) {
  if (a == Tri::kFalse || b == Tri::kFalse) return Tri::kFalse;
  return (a == Tri::kUnknown || b == Tri::kUnknown) ? Tri::kUnknown : Tri::kTrue;
}
Tri Or(Tri a, Tri b) {
  if (a == Tri::kTrue || b == Tri::kTrue) return Tri::kTrue;
  return (a == Tri::kUnknown || b == Tri::kUnknown) ? Tri::kUnknown : Tri::kFalse;
}

// Why a statement's outcome was kUnknown; both point into static or policy-owned storage.
struct Doubt {
  const std::string* location = nullptr;
  const char* why = nullptr;
};

// Folds per-element results of one clause over the request's values for its key:
//   plain positive, ForAnyValue:*        -> some element satisfies it       (OR)
//   plain negated (StringNotEquals ...)  -> no element matches any value    (AND of NOT: the NOR)
//   ForAnyValue: negated                 -> some element matches no value   (OR of NOT, as AWS)
//   ForAllValues:*                       -> every element satisfies it      (AND)
// For single-valued keys all rows reduce to the plain meaning.
class Accumulator {
 public:
  explicit Accumulator(const Clause& c)
      : all_(c.set == SetMode::kForAllValues || (c.set == SetMode::kNone && c.negated)),
        negated_(c.negated),
        acc_(all_ ? Tri::kTrue : Tri::kFalse) {}

  // Feeds whether one element matches any of the clause's values. Returns false once decided.
  bool Add(Tri matches) {
    const Tri r = negated_ ? Not(matches) : matches;
    acc_ = all_ ? And(acc_, r) : Or(acc_, r);
    return acc_ != (all_ ? Tri::kFalse : Tri::kTrue);
  }
  // `incomplete`: the request may have further values nobody could determine.
  Tri Finish(bool incomplete) {
    if (incomplete) Add(Tri::kUnknown);
    return acc_;
  }

 private:
  bool all_;
  bool negated_;
  Tri acc_;
};

bool StringMatches(const Clause& c, std::string_view x) {
  switch (c.op) {
    case OpKind::kStringEquals:
      return std::find(c.strings.begin(), c.strings.end(), x) != c.strings.end();
    case OpKind::kStringEqualsIgnoreCase:
      return std::any_of(c.strings.begin(), c.strings.end(),
                         [&](const std::string& v) { return EqualsIgnoreAsciiCase(v, x); });
    case OpKind::kStringLike:
      if (c.key->kind == KeyKind::kPath) {
        return std::any_of(c.path_globs.begin(), c.path_globs.end(),
                           [&](const PathGlob& g) { return g.Matches(x); });
      }
      return std::any_of(c.strings.begin(), c.strings.end(),
                         [&](const std::string& v) { return GlobMatch(v, x); });
    default:
      return false;  // unreachable: the parser pairs string keys with string operators
  }
}

bool NumberMatches(const Clause& c, int64_t x) {
  for (int64_t v : c.numbers) {
    bool m = false;
    switch (c.op) {
      case OpKind::kNumericEquals:
        m = x == v;
        break;
      case OpKind::kNumericLessThan:
        m = x < v;
        break;
      case OpKind::kNumericLessThanEquals:
        m = x <= v;
        break;
      case OpKind::kNumericGreaterThan:
        m = x > v;
        break;
      case OpKind::kNumericGreaterThanEquals:
        m = x >= v;
        break;
      default:
        break;
    }
    if (m) return true;
  }
  return false;
}

bool BoolMatches(const Clause& c, bool x) { return x ? c.bool_true : c.bool_false; }

std::string_view NonEmpty(const std::optional<std::string>& s) {
  return s ? std::string_view(*s) : std::string_view();
}

// Caller facts that need the resolver are computed at most once per evaluation, on first use.
class Evaluator {
 public:
  Evaluator(const AuthzRequest& req, const NameResolver& resolver, std::string_view path,
            bool has_path)
      : req_(req), resolver_(resolver), path_(path), has_path_(has_path) {}

  Tri StatementApplies(const Statement& st, Doubt* doubt) {
    Tri principal = Tri::kTrue;
    Doubt principal_doubt;
    if (!st.any_principal) {
      principal = Tri::kFalse;
      for (const PrincipalEntry& e : st.principals) {
        const char* why = nullptr;
        const Tri t = PrincipalMatches(e, &why);
        if (t == Tri::kUnknown && principal_doubt.why == nullptr)
          principal_doubt = {&e.location, why};
        principal = Or(principal, t);
        if (principal == Tri::kTrue) break;
      }
      if (principal == Tri::kFalse) return Tri::kFalse;
    }
    Tri result = principal;
    if (principal == Tri::kUnknown) *doubt = principal_doubt;
    for (const Clause& c : st.clauses) {
      const char* why = nullptr;
      const Tri t = ClauseHolds(c, &why);
      if (t == Tri::kFalse) return Tri::kFalse;
      if (t == Tri::kUnknown && doubt->why == nullptr) *doubt = {&c.location, why};
      result = And(result, t);
    }
    return result;
  }

 private:
  Tri PrincipalMatches(const PrincipalEntry& e, const char** why) {
    switch (e.kind) {
      case PrincipalEntry::Kind::kUid:
        return FromBool(req_.uid == e.id);
      case PrincipalEntry::Kind::kGid:
        return InGroup(e.id, why);
      case PrincipalEntry::Kind::kUser: {
        auto uid = resolver_.UidForUser(e.name);
        if (!uid.ok()) {
          *why = "user lookup failed";
          return Tri::kUnknown;
        }
        return FromBool(uid->has_value() && **uid == req_.uid);  // no such user: matches nobody
      }
      case PrincipalEntry::Kind::kGroup: {
        auto gid = resolver_.GidForGroup(e.name);
        if (!gid.ok()) {
          *why = "group lookup failed";
          return Tri::kUnknown;
        }
        if (!gid->has_value()) return Tri::kFalse;  // no such group: matches nobody
        return InGroup(**gid, why);
      }
      case PrincipalEntry::Kind::kUnit:
        if (NonEmpty(req_.unit).empty()) {
          *why = "the caller's systemd unit could not be determined";
          return Tri::kUnknown;
        }
        return FromBool(*req_.unit == e.name);
    }
    return Tri::kUnknown;
  }

  Tri InGroup(uint32_t gid, const char** why) {
    if (gid == req_.gid) return Tri::kTrue;
    EnsureGroups();
    if (std::find(gids_.begin(), gids_.end(), gid) != gids_.end()) return Tri::kTrue;
    if (gids_incomplete_) {
      *why = "the caller's groups could not be determined";
      return Tri::kUnknown;
    }
    return Tri::kFalse;
  }

  // What a clause means when the request has no value for its key (see docs/policy.md).
  static Tri Absent(const Clause& c, const char** why) {
    if (c.op == OpKind::kNull) return FromBool(c.null_expects_absent);
    if (c.if_exists) return Tri::kTrue;
    if (c.key->caller_attribute) {
      *why = "the caller's value for this key could not be determined";
      return Tri::kUnknown;
    }
    if (c.set == SetMode::kForAllValues) {
      *why = "key absent from the request (ForAllValues needs values)";
      return Tri::kUnknown;
    }
    if (c.set == SetMode::kForAnyValue) return Tri::kFalse;
    if (c.negated) {
      *why = "key absent from the request under a negated operator";
      return Tri::kUnknown;
    }
    return Tri::kFalse;
  }

  Tri ClauseHolds(const Clause& c, const char** why) {
    // Null asks only whether a value exists; the others compare it.
    const bool is_null = c.op == OpKind::kNull;
    const Tri present = FromBool(!c.null_expects_absent);
    Accumulator acc(c);
    switch (c.key->kind) {
      case KeyKind::kPath:
        if (!has_path_) return Absent(c, why);
        if (is_null) return present;
        acc.Add(FromBool(StringMatches(c, path_)));
        break;
      case KeyKind::kVolume:
      case KeyKind::kExecutable:
      case KeyKind::kUnit: {
        const std::string_view v = NonEmpty(c.key->kind == KeyKind::kVolume       ? req_.volume
                                            : c.key->kind == KeyKind::kExecutable ? req_.executable
                                                                                  : req_.unit);
        if (v.empty()) return Absent(c, why);
        if (is_null) return present;
        acc.Add(FromBool(StringMatches(c, v)));
        break;
      }
      case KeyKind::kUid:
        if (is_null) return present;
        acc.Add(FromBool(NumberMatches(c, req_.uid)));
        break;
      case KeyKind::kGid:
        if (is_null) return present;
        EnsureGroups();
        for (uint32_t g : gids_) {
          if (!acc.Add(FromBool(NumberMatches(c, g)))) break;
        }
        return Finish(&acc, gids_incomplete_, "the caller's groups could not be determined", why);
      case KeyKind::kUser:
        EnsureUserName();
        if (user_state_ == Lookup::kFailed) {
          *why = "user name lookup failed";
          return Tri::kUnknown;
        }
        if (user_state_ == Lookup::kAbsent) return Absent(c, why);
        if (is_null) return present;
        acc.Add(FromBool(StringMatches(c, user_name_)));
        break;
      case KeyKind::kGroup: {
        if (is_null) return present;
        EnsureGroupNames();
        for (const auto& name : group_names_) {
          if (!acc.Add(name ? FromBool(StringMatches(c, *name)) : Tri::kUnknown)) break;
        }
        return Finish(&acc, gids_incomplete_, "the caller's group names could not be determined",
                      why);
      }
      case KeyKind::kForwarded:
        if (is_null) return present;
        acc.Add(FromBool(BoolMatches(c, req_.forwarded)));
        break;
      case KeyKind::kEncryptionContext: {
        const auto it = req_.encryption_context.find(c.context_key);
        if (it == req_.encryption_context.end()) return Absent(c, why);
        if (is_null) return present;
        acc.Add(FromBool(StringMatches(c, it->second)));
        break;
      }
      case KeyKind::kEncryptionContextKeys:
        if (req_.encryption_context.empty()) return Absent(c, why);
        if (is_null) return present;
        for (const auto& [k, v] : req_.encryption_context) {
          if (!acc.Add(FromBool(StringMatches(c, k)))) break;
        }
        break;
    }
    return acc.Finish(false);
  }

  static Tri Finish(Accumulator* acc, bool incomplete, const char* reason, const char** why) {
    const Tri t = acc->Finish(incomplete);
    if (t == Tri::kUnknown) *why = reason;
    return t;
  }

  void EnsureGroups() {
    if (groups_done_) return;
    groups_done_ = true;
    gids_.push_back(req_.gid);
    const auto add = [&](const std::vector<uint32_t>& more) {
      for (uint32_t g : more) {
        if (std::find(gids_.begin(), gids_.end(), g) == gids_.end()) gids_.push_back(g);
      }
    };
    if (req_.supplementary_gids) {
      add(*req_.supplementary_gids);
      return;
    }
    auto db = resolver_.GroupsOf(req_.uid, req_.gid);
    if (db.ok()) {
      add(*db);
    } else {
      gids_incomplete_ = true;
    }
  }

  void EnsureUserName() {
    if (user_state_ != Lookup::kNotDone) return;
    auto name = resolver_.UserName(req_.uid);
    if (!name.ok()) {
      user_state_ = Lookup::kFailed;
    } else if (!name->has_value() || (*name)->empty()) {
      user_state_ = Lookup::kAbsent;
    } else {
      user_state_ = Lookup::kKnown;
      user_name_ = std::move(**name);
    }
  }

  // A gid whose name cannot be found is an unknown element (doubt), not a non-match.
  void EnsureGroupNames() {
    if (group_names_done_) return;
    group_names_done_ = true;
    EnsureGroups();
    for (uint32_t g : gids_) {
      auto name = resolver_.GroupName(g);
      if (name.ok() && name->has_value() && !(*name)->empty()) {
        group_names_.emplace_back(std::move(**name));
      } else {
        group_names_.emplace_back(std::nullopt);
      }
    }
  }

  enum class Lookup : uint8_t { kNotDone, kKnown, kAbsent, kFailed };

  const AuthzRequest& req_;
  const NameResolver& resolver_;
  std::string_view path_;
  bool has_path_;

  bool groups_done_ = false;
  bool gids_incomplete_ = false;
  std::vector<uint32_t> gids_;  // primary first
  Lookup user_state_ = Lookup::kNotDone;
  std::string user_name_;
  bool group_names_done_ = false;
  std::vector<std::optional<std::string>> group_names_;  // parallel to gids_
};

// "kms:Decrypt for uid 1000 on /bob/x"
std::string DescribeRequest(const AuthzRequest& req, std::string_view path, bool has_path) {
  std::string s(ActionName(req.action));
  s += " for uid ";
  s += std::to_string(req.uid);
  if (has_path) {
    s += " on ";
    AppendSanitized(&s, path, 512);
  }
  return s;
}

std::string StatementName(const Statement& st) {
  return st.has_sid ? "statement " + Quote(st.label) : st.label;
}

std::string DoubtText(const Doubt& d) { return *d.location + ": " + d.why; }

Decision EvaluateImpl(const CompiledPolicy& policy, const AuthzRequest& req,
                      const NameResolver& resolver) {
  Decision d;  // default deny
  if (static_cast<int>(req.action) >= kActionCount) {
    d.reason = "request refused: unknown action";
    return d;
  }
  if (req.uid == kNoId || req.gid == kNoId) {
    d.reason = "request refused: caller uid/gid not set";
    return d;
  }
  std::string path;
  const bool has_path = req.path.has_value();
  if (has_path) {
    auto normalized = NormalizeRequestPath(*req.path);
    if (!normalized.ok()) {
      d.reason = "request path rejected: " + normalized.error().message();
      return d;
    }
    path = std::move(*normalized);
  }

  Evaluator ev(req, resolver, path, has_path);
  const ActionSet bit = ActionBit(req.action);
  const std::vector<Statement>& statements = policy.data().statements;

  // Deny pass: every Deny statement is considered before any Allow. A definite match is preferred
  // over one applied on doubt, so the reason names the clearest cause.
  int deny = -1;
  Doubt deny_doubt;
  for (size_t i = 0; i < statements.size(); ++i) {
    const Statement& st = statements[i];
    if (st.effect != Effect::kDeny || (st.actions & bit) == 0) continue;
    Doubt doubt;
    const Tri t = ev.StatementApplies(st, &doubt);
    if (t == Tri::kTrue) {
      deny = static_cast<int>(i);
      deny_doubt = {};
      break;
    }
    if (t == Tri::kUnknown && deny < 0) {
      deny = static_cast<int>(i);
      deny_doubt = doubt;
    }
  }
  if (deny >= 0) {
    const Statement& st = statements[static_cast<size_t>(deny)];
    d.is_explicit = true;
    d.sid = st.label;
    d.statement_index = deny;
    d.reason = StatementName(st) + " denies " + DescribeRequest(req, path, has_path);
    if (deny_doubt.why != nullptr) d.reason += " (applied on doubt: " + DoubtText(deny_doubt) + ")";
    return d;
  }

  int skipped = -1;
  Doubt skipped_doubt;
  for (size_t i = 0; i < statements.size(); ++i) {
    const Statement& st = statements[i];
    if (st.effect != Effect::kAllow || (st.actions & bit) == 0) continue;
    Doubt doubt;
    const Tri t = ev.StatementApplies(st, &doubt);
    if (t == Tri::kTrue) {
      d.effect = Effect::kAllow;
      d.is_explicit = true;
      d.sid = st.label;
      d.statement_index = static_cast<int>(i);
      d.reason = StatementName(st) + " allows " + DescribeRequest(req, path, has_path);
      return d;
    }
    if (t == Tri::kUnknown && skipped < 0) {
      skipped = static_cast<int>(i);
      skipped_doubt = doubt;
    }
  }
  d.reason = "no statement allows " + DescribeRequest(req, path, has_path);
  if (skipped >= 0) {
    d.reason += " (" + StatementName(statements[static_cast<size_t>(skipped)]) +
                " not applied on doubt: " + DoubtText(skipped_doubt) + ")";
  }
  return d;
}

}  // namespace

Decision Evaluate(const CompiledPolicy& policy, const AuthzRequest& request,
                  const NameResolver& resolver) noexcept {
  try {
    return EvaluateImpl(policy, request, resolver);
  } catch (...) {
    Decision d;                   // deny; every string below fits the small-string buffer,
    d.reason = "internal error";  // so building this answer cannot throw again
    return d;
  }
}

Status CheckLockout(const CompiledPolicy& new_policy, const AuthzRequest& caller,
                    const NameResolver& resolver) {
  try {
    AuthzRequest req = caller;
    req.action = Action::kPutKeyPolicy;
    const Decision d = Evaluate(new_policy, req, resolver);
    if (d.allowed()) return Status::Ok();
    // Built from the decision's parts, not its reason: the reason may quote a file path.
    std::string msg = "the new key policy would not allow the caller (uid " +
                      std::to_string(caller.uid) + ") to change it again: ";
    msg += d.is_explicit ? d.sid + " denies kms:PutKeyPolicy"
                         : std::string("no statement allows kms:PutKeyPolicy");
    msg += "; set BypassPolicyLockoutSafetyCheck to put it anyway";
    return Error(Code::kInvalidArgument, std::move(msg));
  } catch (...) {
    return Error(Code::kInternal, "lockout check failed: internal error");
  }
}

}  // namespace kmsfs::keyd
