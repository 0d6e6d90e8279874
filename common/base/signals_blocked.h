// SignalsBlocked: blocks every signal in the calling thread for its lifetime, then restores the
// old mask. A thread created meanwhile inherits the full mask: the way to start helper threads
// that must never take a process signal (those go to the thread that handles them: kmsfs's
// FUSE reader, keyd's signalfd loop).
#pragma once

#include <signal.h>

namespace kmsfs {

class SignalsBlocked {
 public:
  SignalsBlocked();
  ~SignalsBlocked();
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

 private:
  sigset_t old_;
};

}  // namespace kmsfs
