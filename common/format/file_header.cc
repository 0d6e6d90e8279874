#include "common/format/file_header.h"

#include <algorithm>

#include "common/format/block_layout.h"
#include "common/format/byte_reader.h"
#include "common/format/wrapped_blob.h"

namespace kmsfs::format {
namespace {

using internal::AppendBytes;
using internal::AppendU16;
using internal::AppendU32;

constexpr uint8_t kMagic[4] = {'K', 'M', 'S', 'F'};
static_assert(FileHeader::kSize == kHeaderPageSize, "the header is the first page");
static_assert(FileHeader::kFixedLen + WrappedBlob::kMinLen <= FileHeader::kSize);

Error Corrupt(const char* what) {
  return Error(Code::kCorrupt, std::string("file header: ") + what);
}

// Why `blob` can't be a header's wrapped DEK; empty if it can.
std::string WrappedDekProblem(ByteSpan blob) {
  if (blob.size() > FileHeader::kMaxBlobLen) return "wrapped key length out of range";
  auto parsed = ParseWrappedBlob(blob);
  if (!parsed.ok()) return parsed.error().message();
  if (parsed->ciphertext.size() != FileHeader::kWrappedDekCiphertextLen) {
    return "wrapped key is not a 256-bit key";
  }
  return {};
}

}  // namespace

Result<FileHeader> ParseFileHeader(ByteSpan page) {
  if (page.size() != FileHeader::kSize) return Corrupt("not exactly one page");
  internal::ByteReader r(page);
  ByteSpan magic, blob;
  uint16_t version, blob_len;
  uint32_t flags;
  FileHeader header;
  // The size check above makes these reads infallible; they are still checked, so that a
  // change to kSize or kFixedLen can never turn into an out-of-bounds read.
  if (!r.ReadBytes(4, &magic) || !r.ReadU16(&version) || !r.ReadU32(&flags) ||
      !r.ReadArray(&header.file_id) || !r.ReadU16(&blob_len)) {
    return Corrupt("truncated");
  }
  if (!std::equal(magic.begin(), magic.end(), kMagic)) return Corrupt("bad magic");
  if (version != FileHeader::kVersion) return Corrupt("unknown version");
  if (flags != 0) return Corrupt("unknown flags");
  if (internal::AllZero(header.file_id)) return Corrupt("zero file id");
  if (blob_len > FileHeader::kMaxBlobLen) return Corrupt("wrapped key length out of range");
  if (!r.ReadBytes(blob_len, &blob)) return Corrupt("truncated wrapped key");
  if (std::string problem = WrappedDekProblem(blob); !problem.empty()) {
    return Error(Code::kCorrupt, "file header: " + problem);
  }
  // Zero padding: no byte of the page is left unexplained, so nothing can be hidden in it and
  // every accepted page has exactly one meaning.
  ByteSpan padding;
  if (!r.ReadBytes(r.remaining(), &padding) || !internal::AllZero(padding)) {
    return Corrupt("nonzero padding");
  }
  header.wrapped_dek.assign(blob.begin(), blob.end());
  return header;
}

Result<Bytes> SerializeFileHeader(const FileHeader& header) {
  if (internal::AllZero(header.file_id)) {
    return Error(Code::kInvalidArgument, "file header: zero file id");
  }
  if (std::string problem = WrappedDekProblem(header.wrapped_dek); !problem.empty()) {
    return Error(Code::kInvalidArgument, "file header: " + problem);
  }
  Bytes out;
  out.reserve(FileHeader::kSize);
  AppendBytes(&out, kMagic);
  AppendU16(&out, FileHeader::kVersion);
  AppendU32(&out, 0);  // flags: none defined in v1
  AppendBytes(&out, header.file_id);
  AppendU16(&out, uint16_t(header.wrapped_dek.size()));
  AppendBytes(&out, header.wrapped_dek);
  out.resize(FileHeader::kSize, 0);
  return out;
}

}  // namespace kmsfs::format
