/*
** deferral.pml — the signal-deferral core (src/core/lg_signal.c) as a state
** machine, checked by spin over every interleaving. The inlines carry the C
** names: arm, route, begin_cleanup, close, drain, deliver; the two Lua
** states' threads run handler_close (src/lua/lg_handler.c) around them.
**
** The world: two threads, each running one Lua state; four frame slots:
** frames 0 and 1 belong to thread 0, frame 2 to thread 1, and frame 3 is
** armed and closed by whichever cleanup gets to it first (a cleanup that
** guards itself). Frames 0 and 2 are ErrorHandlers, 1 and 3 ExitHandlers.
** Each thread arms its frames and closes them in any order, normally or by an
** error, and may call os.exit(n, true) at any step (its open frames closed as
** on a normal exit, then its state is closed). Two signals arrive at any
** step, in cleanups and after a state is closed included; the program may
** install its own disposition once, at any step. The list lock and the
** pending ring are modelled as in C: the handler never waits for the lock.
**
** Checked (assertions, and the end state of every run):
**  - each cleanup runs at most once; a frame stopped by a signal, or closed
**    by an error, runs its cleanup;
**  - every signal that reached our handler is delivered exactly once, to the
**    disposition in force after the last frame closed, and never while a
**    frame is open (so after the cleanups it triggered);
**  - our handler is installed exactly while some frame is open, and a
**    disposition the program installed meanwhile is left as it set it;
**  - while a frame is CLEANING, a signal is recorded there and interrupts
**    nothing; a frame armed by a cleanup receives no signal;
**  - nothing touches a closed state (no interrupt aimed at it).
*/

#define NF 4            /* frame slots */
#define NONE 255
#define NSIG 2          /* signals 1 and 2: bit 1 and bit 2 of a record */

/* frame states, as LG_FRAME_* */
#define CLOSED 0
#define ARMED 1
#define STOPPING 2
#define CLEANING 3

/* dispositions */
#define DFL 0
#define OURS 1
#define PROG 2

byte fstate[NF];                 /* CLOSED until armed */
byte stamp[NF];                  /* arm order: the newest has the largest */
byte owner[NF];                  /* thread (= Lua state) that armed it */
bit used[NF];                    /* each slot is armed once */
byte rec[NF];                    /* its record: a set of signal bits */
byte runs[NF];                   /* cleanups run */
bit nested[NF];                  /* armed by a cleanup */
byte next_stamp = 1;
byte cleaning;                   /* frames CLEANING */
byte open_frames;

bit lock;                        /* the list lock */
byte pending;                    /* signals waiting for the lock holder */
byte orphans;                    /* routed with no frame left (normal code) */

byte disp = DFL;                 /* what the kernel runs for our signals */
byte saved_disp;                 /* what our install replaced */
bit installed;                   /* our bookkeeping: handler put in place */
bit prog_installed;              /* the program installed its own, once */

byte delivered;                  /* signals that reached a disposition not ours */
byte sent;                       /* signals the kernel generated */
bit state_closed[2];
byte threads_done;

/* ---- route: where a signal goes (lock held, or in the handler) ---- */
inline route(bitv) {
  target = NONE;
  best = 0;
  if
  :: cleaning > 0 ->               /* the innermost CLEANING frame: deferred */
     for (k : 0 .. NF - 1) {
       if
       :: fstate[k] == CLEANING && stamp[k] >= best -> target = k; best = stamp[k]
       :: else -> skip
       fi
     }
  :: else ->                       /* the newest frame */
     for (k : 0 .. NF - 1) {
       if
       :: fstate[k] != CLOSED && stamp[k] >= best -> target = k; best = stamp[k]
       :: else -> skip
       fi
     }
  fi;
  if
  :: target == NONE -> orphan_hit = 1
  :: else ->
     assert((rec[target] & bitv) == 0);
     rec[target] = rec[target] | bitv;
     if
     :: fstate[target] == CLEANING -> skip        /* recorded only */
     :: else ->
        assert(cleaning == 0);                    /* deferred for everyone */
        if
        :: fstate[target] == ARMED -> fstate[target] = STOPPING
        :: else -> skip
        fi;
        assert(!state_closed[owner[target]])      /* interrupt: the state is alive */
     fi
  fi;
  target = 0; best = 0; k = 0
}

/* the kernel delivers signal bitv to this process: our handler, or not */
inline kill(bitv) {
  if
  :: disp == OURS ->
     if
     :: lock == 0 ->
        orphan_hit = 0;
        route(bitv);
        if
        :: orphan_hit -> delivered = delivered | bitv   /* deliver_unowned */
        :: else -> skip
        fi
     :: else -> pending = pending | bitv                /* pending_push */
     fi
  :: else ->
     assert(open_frames == 0 || prog_installed);        /* never while a frame is open */
     assert((delivered & bitv) == 0);                   /* exactly once */
     delivered = delivered | bitv
  fi
}

/* ---- the lock, as lock_take / lock_give (which drains) ---- */
inline lock_take() {
  atomic { lock == 0 -> lock = 1 }
}

inline drain() {
  do
  :: pending != 0 ->
     if
     :: pending & 1 -> b = 1
     :: else -> b = 2
     fi;
     pending = pending & ~b;
     orphan_hit = 0;
     route(b);
     if
     :: orphan_hit -> orphans = orphans | b
     :: else -> skip
     fi
  :: else -> break
  od
}

inline lock_give() {
  d_step { drain(); lock = 0; b = 0; orphan_hit = 0 }
}

inline deliver_orphans() {
  do
  :: atomic { orphans != 0 ->
       if
       :: orphans & 1 -> b = 1
       :: else -> b = 2
       fi;
       orphans = orphans & ~b;
       kill(b) }
  :: else -> break
  od
}

/* ---- the transitions ---- */
inline arm(f, t, is_nested) {
  lock_take();
  atomic {
    if
    :: !installed ->                             /* install */
       installed = 1;
       saved_disp = disp;
       disp = OURS
    :: else -> skip
    fi;
    used[f] = 1; owner[f] = t; nested[f] = is_nested;
    stamp[f] = next_stamp; next_stamp++;
    fstate[f] = ARMED; open_frames++
  };
  lock_give();
  deliver_orphans()
}

inline begin_cleanup(f) {
  lock_take();
  atomic { fstate[f] = CLEANING; cleaning++ };
  lock_give();
  deliver_orphans()
}

inline close(f) {
  lock_take();
  atomic {
    if
    :: fstate[f] == CLEANING -> cleaning--
    :: else -> skip
    fi;
    fstate[f] = CLOSED; open_frames--;
    moved = rec[f]; rec[f] = 0;
    if
    :: open_frames > 0 ->                      /* route the record again */
       last = 0;
       if
       :: moved & 1 -> route(1)
       :: else -> skip
       fi;
       if
       :: moved & 2 -> route(2)
       :: else -> skip
       fi
    :: else ->                                 /* restore_dispositions */
       last = 1;
       installed = 0;
       if
       :: disp == OURS -> disp = saved_disp
       :: else -> skip                         /* the program's own stays */
       fi
    fi
  };
  lock_give();
  if
  :: last ->     /* deliver, in arrival order: a frame armed meanwhile by
                 ** another thread has put our handler back, and gets them */
     if
     :: moved & 1 -> atomic { kill(1) }
     :: else -> skip
     fi;
     if
     :: moved & 2 -> atomic { kill(2) }
     :: else -> skip
     fi
  :: else -> skip
  fi;
  deliver_orphans()
}

/* handler_close: the cleanup runs when the block failed, was stopped, or
** the handler is an ExitHandler; a cleanup may guard itself with frame 3. */
inline handler_close(f, t, failed) {
  stopped = failed || fstate[f] == STOPPING || rec[f] != 0;
  if
  :: stopped || f == 1 || f == 3 ->
     begin_cleanup(f);
     assert(runs[f] == 0);
     runs[f]++;
     if
     :: atomic { !used[3] && f != 3 -> used[3] = 1 } ->  /* it arms and closes one */
        arm(3, t, 1);
        handler_close_nested(t)
     :: else -> skip
     fi
  :: else -> skip        /* a normal exit of an ErrorHandler: nothing runs */
  fi;
  close(f)
}

/* frame 3, inside a cleanup: its block ends normally (so does the cleanup) */
inline handler_close_nested(t) {
  assert(rec[3] == 0);          /* deferred for everyone: it received nothing */
  begin_cleanup(3);
  assert(runs[3] == 0);
  runs[3]++;
  close(3)
}

/* os.exit's next victim, in f: the newest open frame of mine, or NONE */
inline sweep() {
  f = NONE; best = 0;
  for (k : lo .. hi - 1) {
    if
    :: used[k] && fstate[k] != CLOSED && stamp[k] >= best -> f = k; best = stamp[k]
    :: else -> skip
    fi
  }
  k = 0; best = 0; failed = 0
}

/* handler_close appears once (at "closing"): a close of the program's choice
** and each close of os.exit's sweep go there. (Written twice, it made pan.c
** twice as long, and gcc's time on it the longest job of the suite.) */
proctype Thread(byte t; byte lo; byte hi) {
  byte f, k, best, target, b, moved;
  bit stopped, last, orphan_hit, failed, exiting;
choose:
  do
  :: /* arm my next frame */
     (lo < hi && !used[lo]) || (lo + 1 < hi && !used[lo + 1]) ->
     d_step {
       f = lo;
       do
       :: f < hi && used[f] -> f++
       :: else -> break
       od
     };
     arm(f, t, 0);
     f = 0
  :: /* close any open frame of mine, in any order, normally or by an error */
     if
     :: lo < hi && fstate[lo] != CLOSED && fstate[lo] != CLEANING -> f = lo
     :: lo + 1 < hi && fstate[lo + 1] != CLOSED && fstate[lo + 1] != CLEANING -> f = lo + 1
     fi;
     if
     :: failed = 0
     :: failed = 1
     fi;
     goto closing
  :: /* os.exit(n, true): open frames closed as on a normal exit, newest first */
     d_step { exiting = 1; sweep() };
     goto swept
  :: /* done: everything armed and closed */
     d_step {
       f = lo;
       do
       :: f < hi && used[f] && fstate[f] == CLOSED -> f++
       :: else -> break
       od
     };
     if
     :: f == hi -> goto state_close
     :: else -> f = 0
     fi
  od;
closing:
  handler_close(f, t, failed);
  if
  :: d_step { exiting; stopped = 0; last = 0; moved = 0; sweep() }
  :: !exiting -> f = 0; failed = 0; stopped = 0; last = 0; moved = 0; goto choose
  fi;
swept:
  if
  :: f == NONE -> f = 0; goto state_close
  :: else -> goto closing
  fi;
state_close:
  /* the state closes: no frame of it may remain (the sentinel's sweep) */
  skip;
  d_step {
    for (k : lo .. hi - 1) { assert(fstate[k] == CLOSED) }
    state_closed[t] = 1;
    threads_done++;
    k = 0; f = 0; failed = 0; exiting = 0    /* how it got here is forgotten */
  }
}

proctype Signals() {
  byte k, best, target, b;
  bit orphan_hit;
  do
  :: sent < NSIG ->
     d_step {
       if
       :: sent == 0 -> b = 1
       :: else -> b = 2
       fi;
       sent++;
       kill(b);
       b = 0; orphan_hit = 0
     }
  :: sent == NSIG -> break
  od
}

proctype Program() {
  /* the program installs its own disposition once, at any step */
  if
  :: atomic { disp == OURS -> disp = PROG; prog_installed = 1 }
  :: skip
  fi
}

init {
  atomic {
    run Thread(0, 0, 2);
    run Thread(1, 2, 3);
    run Signals();
    run Program()
  }
  (threads_done == 2 && sent == NSIG);
  /* the end of every run */
  assert(open_frames == 0 && cleaning == 0 && installed == 0);
  assert(pending == 0 && orphans == 0);
  assert(delivered == 3);                      /* both, exactly once each */
  assert(disp == DFL || prog_installed);      /* ours is gone */
  assert(runs[0] <= 1 && runs[1] <= 1 && runs[2] <= 1 && runs[3] <= 1)
}
