// Filesystem: revocation of open files — asking keyd again, periodically, whether each open
// handle's opener may still decrypt its file (docs/filesystem.md "Revocation of open files").
#include <algorithm>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "common/ipc/message.h"
#include "common/log/log.h"
#include "fs/fuse/filesystem.h"

namespace kmsfs::fs {
namespace {

std::shared_ptr<spdlog::logger> Logger() {
  static const auto kLogger = log::Get("fs.revoke");
  return kLogger;
}

using Opener = std::tuple<uid_t, gid_t, pid_t>;

}  // namespace

std::vector<fuse_ino_t> Filesystem::RevalidateOpenFiles() {
  // Snapshot the grants, each inode pinned so that a concurrent release + FORGET cannot free it
  // under us. The Grant objects are shared, so a released handle's Grant stays valid here.
  std::vector<std::shared_ptr<Grant>> grants;
  {
    std::lock_guard lock(grants_mu_);
    grants.reserve(grants_.size());
    for (const auto& [ptr, grant] : grants_) {
      grants.push_back(grant);
      inodes_.Pin(grant->inode);
    }
  }
  std::sort(grants.begin(), grants.end(),
            [](const auto& a, const auto& b) { return a->inode < b->inode; });

  std::vector<fuse_ino_t> invalidate;
  for (size_t begin = 0; begin < grants.size();) {
    Inode* inode = grants[begin]->inode;
    size_t end = begin;
    while (end < grants.size() && grants[end]->inode == inode) ++end;

    // Ask keyd once per distinct opener, with no inode lock held (a keyd call may take up to
    // the key timeout). The header is read through a fresh fd of our own, so nothing of the
    // open state is touched until the answers are in.
    std::map<Opener, Result<FileKey>> answers;
    auto fd = ReopenBacking(inode, false);
    std::unique_ptr<PosixBackingFile> backing;
    if (fd.ok()) backing = std::make_unique<PosixBackingFile>(std::move(*fd));
    const std::string path = ipc::ToWirePath(inodes_.PathOf(inode));
    for (size_t i = begin; i < end; ++i) {
      const Grant& g = *grants[i];
      const Opener opener{g.uid, g.gid, g.pid};
      if (answers.count(opener) != 0) continue;
      if (!fd.ok()) {
        answers.emplace(opener, fd.error());
        continue;
      }
      const Requester who{g.uid, g.gid, g.pid, path};
      answers.emplace(opener, OpenFileKey(backing.get(), *volume_, keys_, who));
    }

    bool revoked_now = false;
    {
      std::unique_lock io(inode->io_mu);
      std::lock_guard lock(inode->mu);
      if (inode->open_file) {
        for (auto& [opener, answer] : answers) {
          if (!answer.ok()) continue;
          // A grant restores a wiped key; a key that differs means the header was replaced.
          Status restored = inode->open_file->RestoreKey(std::move(answer).value());
          if (!restored.ok()) answer = restored.error();
        }
        for (size_t i = begin; i < end; ++i) {
          Grant& g = *grants[i];
          const auto& answer = answers.at(Opener{g.uid, g.gid, g.pid});
          const Code now = answer.ok() ? Code::kOk : answer.error().code();
          const Code before = g.refused.exchange(now, std::memory_order_acq_rel);
          // Only grants still registered count in refused_handles (a released handle's Grant
          // was dropped under this same mu).
          bool registered;
          {
            std::lock_guard glock(grants_mu_);
            registered = grants_.count(&g) != 0;
          }
          if (!registered) continue;
          if (before == Code::kOk && now != Code::kOk) {
            ++inode->refused_handles;
            revoked_now = true;
            Logger()->warn("open file (backing inode {}): access revoked for uid {}: {}",
                           inode->id().ino, g.uid, answer.error().message());
          } else if (before != Code::kOk && now == Code::kOk) {
            --inode->refused_handles;
            Logger()->info("open file (backing inode {}): access restored for uid {}",
                           inode->id().ino, g.uid);
          }
        }
        if (inode->refused_handles >= inode->open_count && inode->open_file->has_key()) {
          inode->open_file->WipeKey();
        }
      }
    }
    // The kernel may hold plaintext pages read through a handle that has just lost access:
    // they go, so the next read comes to us and fails.
    if (revoked_now) invalidate.push_back(FuseIno(inode));
    begin = end;
  }
  for (const auto& g : grants) inodes_.Forget(g->inode, 1);
  return invalidate;
}

}  // namespace kmsfs::fs
