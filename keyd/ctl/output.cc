#include "keyd/ctl/output.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <vector>

namespace kmsfs::ctl {
namespace {

using nlohmann::json;

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool IsScalar(const json& v) { return !v.is_object() && !v.is_array(); }

// AWS text rendering of a scalar.
std::string Scalar(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  return v.dump();
}

void Text(const json& v, const std::string& label, std::string& out);

void TextObject(const json& obj, const std::string& label, std::string& out) {
  // nlohmann's object is key-ordered (std::map), which gives AWS's sorted columns.
  std::vector<std::string> scalars;
  for (const auto& [k, v] : obj.items()) {
    if (IsScalar(v)) scalars.push_back(Scalar(v));
  }
  if (!scalars.empty()) {
    std::string line = label;
    for (const auto& s : scalars) {
      if (!line.empty()) line += '\t';
      line += s;
    }
    out += line + '\n';
  }
  for (const auto& [k, v] : obj.items()) {
    if (!IsScalar(v)) Text(v, Upper(k), out);
  }
}

void Text(const json& v, const std::string& label, std::string& out) {
  if (v.is_object()) {
    TextObject(v, label, out);
    return;
  }
  if (v.is_array()) {
    std::string scalars = label;
    bool any = false;
    for (const auto& e : v) {
      if (IsScalar(e)) {
        scalars += (scalars.empty() ? "" : "\t") + Scalar(e);
        any = true;
      } else {
        Text(e, label, out);
      }
    }
    if (any) out += scalars + '\n';
    return;
  }
  out += (label.empty() ? "" : label + "\t") + Scalar(v) + '\n';
}

// Table: rows of (path, value) for scalars; arrays of objects become their own sub-tables.
void Flatten(const json& v, const std::string& path,
             std::vector<std::pair<std::string, std::string>>& rows,
             std::vector<std::pair<std::string, const json*>>& tables) {
  if (v.is_object()) {
    for (const auto& [k, e] : v.items())
      Flatten(e, path.empty() ? k : path + "." + k, rows, tables);
    return;
  }
  if (v.is_array()) {
    const bool all_objects =
        !v.empty() && std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_object(); });
    if (all_objects) {
      tables.emplace_back(path, &v);
      return;
    }
    std::string joined;
    for (const auto& e : v)
      joined += (joined.empty() ? "" : ", ") + (IsScalar(e) ? Scalar(e) : e.dump());
    rows.emplace_back(path, joined);
    return;
  }
  rows.emplace_back(path, Scalar(v));
}

std::string Aligned(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + '\n';
  }
  return out;
}

std::string Table(const json& result) {
  std::vector<std::pair<std::string, std::string>> rows;
  std::vector<std::pair<std::string, const json*>> tables;
  Flatten(result, "", rows, tables);
  std::string out;
  if (!rows.empty()) {
    std::vector<std::vector<std::string>> cells;
    for (auto& [k, v] : rows) cells.push_back({k, v});
    out += Aligned(cells);
  }
  for (const auto& [name, arr] : tables) {
    if (!out.empty()) out += '\n';
    out += name + ":\n";
    std::vector<std::string> columns;  // first-seen order
    std::set<std::string> seen;
    for (const auto& e : *arr) {
      for (const auto& [k, v] : e.items()) {
        if (seen.insert(k).second) columns.push_back(k);
      }
    }
    std::vector<std::vector<std::string>> cells{columns};
    for (const auto& e : *arr) {
      std::vector<std::string> row;
      for (const auto& c : columns) {
        const auto it = e.find(c);
        row.push_back(it == e.end() ? "" : IsScalar(*it) ? Scalar(*it) : it->dump());
      }
      cells.push_back(std::move(row));
    }
    out += Aligned(cells);
  }
  return out;
}

}  // namespace

Result<OutputFormat> ParseOutputFormat(std::string_view name) {
  if (name == "json") return OutputFormat::kJson;
  if (name == "text") return OutputFormat::kText;
  if (name == "table") return OutputFormat::kTable;
  return Error(Code::kInvalidArgument, "--output must be json, text or table");
}

std::string Render(const json& result, OutputFormat format) {
  if (result.is_object() && result.empty()) return "";
  switch (format) {
    case OutputFormat::kJson:
      return result.dump(4) + "\n";
    case OutputFormat::kText: {
      std::string out;
      Text(result, "", out);
      return out;
    }
    case OutputFormat::kTable:
      return Table(result);
  }
  return "";
}

}  // namespace kmsfs::ctl
