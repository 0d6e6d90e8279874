// kmsctl's three output formats of a response object: json (the API shape), text (tab-separated,
// as the AWS CLI's), table (aligned, for people).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/base/status.h"

namespace kmsfs::ctl {

enum class OutputFormat { kJson, kText, kTable };

// "json" | "text" | "table"; kInvalidArgument otherwise.
Result<OutputFormat> ParseOutputFormat(std::string_view name);

// The text to print for `result` (ends with a newline), or "" for an empty object — as the AWS
// CLI prints nothing for operations without response fields (EnableKey, CreateAlias, ...).
//   json:  the object exactly, indented by 4 like `aws ... --output json`.
//   text:  the AWS CLI's rules: an object's scalar fields on one line, tab-separated in key order;
//          each nested object or array element on its own line, prefixed with its field name in
//          upper case (KEYMETADATA, KEYS, ...); true/false/null as True/False/None.
//   table: one "Field.Path  value" row per scalar, aligned; an array of objects as a table with a
//          header row.
std::string Render(const nlohmann::json& result, OutputFormat format);

}  // namespace kmsfs::ctl
