// ContentCheck: verifies (and on request repairs) every block of one file's content, layout v1.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "common/crypto/secret.h"
#include "common/format/ids.h"
#include "fs/core/backing_file.h"

namespace kmsfs::fs::fsck {

// One problem in a file's content. Blocks [first_block, last_block] when it concerns blocks;
// neither set for the file as a whole (its size, its header). `problem` and `action` never
// contain plaintext: block numbers, sizes and reasons only.
struct ContentIssue {
  std::optional<uint64_t> first_block;
  std::optional<uint64_t> last_block;
  std::string problem;
  // Set when `repair` was requested: what was done ("zeroed", "cut back to N bytes"), or why
  // nothing could be done. Empty without --repair.
  std::string action;
  bool repairable = true;  // false: left as it is even with --repair (e.g. a header mismatch)
};

struct ContentReport {
  std::vector<ContentIssue> issues;
  uint64_t blocks_checked = 0;
  uint64_t plaintext_size = 0;  // after repair, if a repair changed it
};

// Checks every metadata entry and block of the content that follows an already-verified header
// (docs/format.md §7; docs/fsck.md "Content"): structure of each entry, AES-256-GCM
// authentication of each block and hole under `dek` with the block AAD (volume, file, index,
// FINAL/HOLE, length), FINAL on exactly the last block, empty entries after it, and a backing
// size that layout v1 can produce. It tells a file cut at a block boundary (the last block
// authenticates but is not FINAL) from a file extended past its end (an earlier block
// authenticates as FINAL, also at a shorter length) from damaged blocks.
//
// With `repair`: damaged blocks are re-sealed as zeros under `dek` (fresh nonces, data page
// before entry, then fsync); a cut file gets FINAL on its last surviving block; an extended one
// is cut back to its authentic end; an impossible backing size is cut back to the last group
// boundary (or the file reset to empty when not even block 0's metadata survives); stray
// entries after the end are zeroed. Healthy blocks are never rewritten. When no block at all
// authenticates (a file with at least two blocks), the header and the contents do not belong
// together (headers swapped, contents replaced): that is reported as not repairable and the
// file is left untouched, since zeroing it would destroy what a matching header could still
// open.
//
// Errors: only kIo (errno kept) from `backing` — damage is reported in ContentReport, never as
// an error. Never returns or logs plaintext. Single-threaded; `backing` is borrowed.
Result<ContentReport> CheckContent(const format::Id128& volume_id, const format::Id128& file_id,
                                   const crypto::SecretBytes& dek, BackingFile* backing,
                                   bool repair);

}  // namespace kmsfs::fs::fsck
