// JournalEmitter: copies committed audit records into the systemd journal as structured entries.
//
// Why a follower of the committed trail rather than a call inside Append: records written by
// AppendInTxn become real only if the caller's transaction commits, which the sink never hears
// about, and a journal write must not sit on the group committer's critical path. So a thread
// reads what is committed (after each group commit, and once a second for in-transaction
// records) and sends it. Best effort: the LMDB trail is the authority; a journal that drops or
// rate-limits entries loses nothing there. The only user of <systemd/sd-journal.h>.
//
// Fields: MESSAGE, PRIORITY=6, KMSFS_AUDIT_SEQ, KMSFS_KEY_ID, KMSFS_OPERATION, KMSFS_UID,
// KMSFS_PATH, KMSFS_OUTCOME, KMSFS_AUDIT_HASH. Paths are plaintext names: the journal entry is
// as sensitive as the trail (journalctl access is what decides who may read it).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/base/status.h"
#include "keyd/audit/record_codec.h"

namespace kmsfs::keyd {

class JournalEmitter {
 public:
  // Records with sequence > `after`, in order, at most `limit`. Called on the emitter's thread.
  using Reader = std::function<Result<std::vector<TrailRecord>>(uint64_t after, size_t limit)>;

  // Starts the thread; records after `start_after` (normally the head at startup) are sent.
  JournalEmitter(Reader reader, uint64_t start_after);
  // Stops the thread after at most the batch in progress. Records not yet sent are not sent.
  ~JournalEmitter();
  JournalEmitter(const JournalEmitter&) = delete;
  JournalEmitter& operator=(const JournalEmitter&) = delete;

  // Wakes the thread: something was committed. Cheap; any thread.
  void Notify();

  // Sends one record's entry. Returns the negative errno of sd_journal_send (0 on success).
  static int Send(const TrailRecord& record);

 private:
  void Run();

  const Reader reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false;  // GUARDED_BY(mu_)
  bool stop_ = false;     // GUARDED_BY(mu_)
  uint64_t cursor_;       // only the thread touches it
  std::thread thread_;    // last: starts after the fields above are set
};

}  // namespace kmsfs::keyd
