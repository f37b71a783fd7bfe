# sluice: a reverse proxy for Gunicorn pools. Plain Makefile; see README.md.
PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
CFLAGS  ?= -O2 -g
SANITIZER ?=
V ?= 0
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

PKGS      := libevent libevent_pthreads libevent_openssl openssl inih hiredis libnghttp2
WARN      := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = $(WARN) -Iinclude $(PKG_CFLAGS) $(CFLAGS) $(if $(SANITIZER),-fsanitize=$(SANITIZER) -fno-omit-frame-pointer)
ALL_LDFLAGS = $(LDFLAGS) $(if $(SANITIZER),-fsanitize=$(SANITIZER))
LIBS       = $(PKG_LIBS) -lpthread -lm

ifeq ($(V),0)
Q = @
E = @echo
else
Q =
E = @:
endif

BUILD  ?= build
SRCS   := $(wildcard src/*.c)
LIBSRC := $(filter-out src/main.c,$(SRCS))
# src/status.html (the status page) is compiled in as a C array: $(BUILD)/status_html.c
OBJS   := $(patsubst src/%.c,$(BUILD)/%.o,$(SRCS)) $(BUILD)/status_html.o
LIBOBJ := $(patsubst src/%.c,$(BUILD)/%.o,$(LIBSRC)) $(BUILD)/status_html.o
UNIT_SRCS := $(wildcard test/unit/test_*.c)
UNIT_BINS := $(patsubst test/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))
PYTEST  = /usr/bin/python3 -m pytest

.PHONY: all deps test unit integration sanitize tsan demo bench bench-sizing install clean fuzz fuzz-smoke soak soak-valgrind soak-plain

all: $(BUILD)/sluice

deps:
	$(Q)sh test/deps.sh

$(BUILD)/sluice: $(OBJS)
	$(E) "  LD  $@"
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(OBJS) $(LIBS)

$(BUILD)/%.o: src/%.c $(wildcard include/sluice/*.h) | $(BUILD)
	$(E) "  CC  $<"
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

# where `sluice --from-nginx` finds the installed converter
$(BUILD)/main.o: ALL_CFLAGS += -DSLUICE_DATADIR='"$(PREFIX)/share/sluice"'

$(BUILD):
	$(Q)mkdir -p $(BUILD)/unit

$(BUILD)/status_html.c: src/status.html | $(BUILD)
	$(E) "  GEN $@"
	$(Q){ echo '#include <stddef.h>'; echo 'const char status_html[] = {'; \
		od -An -v -tx1 $< | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
		echo '0};'; echo 'const size_t status_html_len = sizeof status_html - 1;'; } > $@

$(BUILD)/status_html.o: $(BUILD)/status_html.c
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/unit/%: test/unit/%.c $(LIBOBJ) | $(BUILD)
	$(E) "  CC  $@"
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(LIBOBJ) $(LIBS) -lcmocka

# test_queue records each wake-up the queue posts, and lets the woken waiter be reused at once
$(BUILD)/unit/test_queue: ALL_LDFLAGS += -Wl,--wrap=mailbox_post

unit: $(UNIT_BINS)
	$(Q)set -e; for t in $(UNIT_BINS); do echo "== $$t"; ./$$t; done

# The integration tests mostly wait (on sockets, timers, Gunicorn): the ones not marked slow
# run in PYTEST_WORKERS processes (pytest-xdist, a module's tests in one process); those
# marked slow (load, timing, long runs) run alone after them. 3 on this 2-core machine:
# the not-slow stage took 3:49 with 2 and 2:53 with 3, under ASan 4:21 and 3:02 (make
# test had reached 15 minutes).
PYTEST_WORKERS ?= 3
PYTEST_PAR = $(PYTEST) -q -p no:cacheprovider --durations=15 -n $(PYTEST_WORKERS) --dist loadfile

integration: $(BUILD)/sluice
	$(Q)SLUICE_BIN=$(abspath $(BUILD)/sluice) $(PYTEST_PAR) -m "not slow" test/integration
	$(Q)SLUICE_BIN=$(abspath $(BUILD)/sluice) $(PYTEST) -q -p no:cacheprovider --durations=15 \
		-m slow test/integration

# make test: install what is missing, build, run every test.
test: deps
	$(Q)$(MAKE) --no-print-directory -j$(JOBS) all $(UNIT_BINS)
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory integration
	$(Q)$(MAKE) --no-print-directory sanitize
	$(Q)$(MAKE) --no-print-directory tsan
	$(Q)$(MAKE) --no-print-directory -j$(JOBS) $(FUZZ_BINS)
	$(Q)$(MAKE) --no-print-directory fuzz-smoke FUZZ_SMOKE_TIME=5

# ASan+UBSan build in its own directory, then the integration suite against it (without
# the tests marked slow: long load and timing runs; `make soak` covers those under ASan).
sanitize:
	$(Q)$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-san SANITIZER=address,undefined CFLAGS="-O1 -g -DSLUICE_QUEUE_CHECK" build-san/sluice
	$(Q)ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		SLUICE_BIN=$(abspath build-san/sluice) SLUICE_SANITIZED=1 $(PYTEST_PAR) \
		-m "not slow" test/integration

# ThreadSanitizer build in its own directory, then the integration tests where several
# threads share state (the queue and its wake-ups across threads, tenants, reloads, the
# admin and scale readers, floods, pools). Part of make test.
TSAN_TESTS = test_queue.py test_fair_queue.py test_tenants.py test_reload.py test_admin.py test_pipeline_flood.py \
	test_pool_safety.py test_balancing.py test_robustness.py test_http2.py
tsan:
	$(Q)$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-tsan SANITIZER=thread CFLAGS="-O1 -g -DSLUICE_QUEUE_CHECK" build-tsan/sluice
	$(Q)TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 suppressions=$(abspath test/tsan.supp)" \
		SLUICE_BIN=$(abspath build-tsan/sluice) SLUICE_SANITIZED=1 $(PYTEST_PAR) -m "not slow" \
		$(addprefix test/integration/,$(TSAN_TESTS))

demo: deps all
	$(Q)sh test/demo.sh

# libFuzzer targets (clang): `make fuzz` runs each for FUZZ_TIME seconds on its corpus in
# test/fuzz/corpus; `make fuzz-smoke` (part of `make test`) replays test/fuzz/crashes and
# runs each FUZZ_SMOKE_TIME seconds. See test/fuzz/README.md.
FUZZ_TIME ?= 60
FUZZ_SMOKE_TIME ?= 10
FUZZ_CC ?= clang
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=all -Iinclude $(PKG_CFLAGS)
, := ,
FUZZ_TARGETS := $(patsubst test/fuzz/%.c,%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_BINS := $(patsubst %,$(BUILD)/fuzz/%,$(FUZZ_TARGETS))
FUZZ_ARGS = -max_len=4096 -timeout=10 $$(test -f test/fuzz/$$t.dict && echo -dict=test/fuzz/$$t.dict)

# the library is compiled once (coverage-instrumented, without libFuzzer's main) and each
# target links it
FUZZ_LIBOBJ := $(patsubst src/%.c,$(BUILD)/fuzz/obj/%.o,$(LIBSRC)) $(BUILD)/fuzz/obj/status_html.o

$(BUILD)/fuzz/obj/%.o: src/%.c $(wildcard include/sluice/*.h)
	$(E) "  FUZZCC $<"
	$(Q)mkdir -p $(BUILD)/fuzz/obj
	$(Q)$(FUZZ_CC) $(subst fuzzer$(,),fuzzer-no-link$(,),$(FUZZ_CFLAGS)) -c -o $@ $<

$(BUILD)/fuzz/obj/status_html.o: $(BUILD)/status_html.c
	$(Q)mkdir -p $(BUILD)/fuzz/obj
	$(Q)$(FUZZ_CC) $(subst fuzzer$(,),fuzzer-no-link$(,),$(FUZZ_CFLAGS)) -c -o $@ $<

$(BUILD)/fuzz/%: test/fuzz/%.c $(wildcard test/fuzz/*.h) $(FUZZ_LIBOBJ)
	$(E) "  FUZZ $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_LIBOBJ) $(LIBS)

fuzz: $(FUZZ_BINS)
	$(Q)set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(BUILD)/fuzz/$$t.corpus; \
		echo "== $$t for $(FUZZ_TIME)s"; \
		$(BUILD)/fuzz/$$t -max_total_time=$(FUZZ_TIME) $(FUZZ_ARGS) -artifact_prefix=$(BUILD)/fuzz/$$t- \
			$(BUILD)/fuzz/$$t.corpus test/fuzz/corpus/$${t#fuzz_}; \
	done

# CI: replay test/fuzz/crashes/NAME-*/crash-*, then each target FUZZ_SMOKE_TIME s on its saved corpus.
fuzz-smoke: $(FUZZ_BINS)
	$(Q)set -e; for t in $(FUZZ_TARGETS); do \
		c=$${t#fuzz_}; log=$(BUILD)/fuzz/$$t.smoke.log; \
		set -- test/fuzz/crashes/$$c-*/crash-*; \
		if [ -f "$$1" ]; then \
			echo "== $$t: $$# saved crash input(s)"; \
			$(BUILD)/fuzz/$$t "$$@" >$$log 2>&1 || { tail -40 $$log; exit 1; }; \
		fi; \
		rm -rf $(BUILD)/fuzz/$$t.smoke; mkdir -p $(BUILD)/fuzz/$$t.smoke; \
		echo "== $$t for $(FUZZ_SMOKE_TIME)s"; \
		$(BUILD)/fuzz/$$t -max_total_time=$(FUZZ_SMOKE_TIME) $(FUZZ_ARGS) \
			-artifact_prefix=$(BUILD)/fuzz/$$t- $(BUILD)/fuzz/$$t.smoke test/fuzz/corpus/$$c \
			>$$log 2>&1 || { tail -60 $$log; exit 1; }; \
		grep -E '^#[0-9]+[[:space:]]+DONE' $$log; \
	done

# Long mixed load under ASan+UBSan+LSan (~12 min), or valgrind (~8 min): docs/soak.md.
# Not part of make test.
soak: deps
	$(Q)bash test/soak/soak.sh

soak-valgrind: deps
	$(Q)bash test/soak/soak.sh --valgrind

soak-plain: deps
	$(Q)bash test/soak/soak.sh --plain

bench: deps all
	$(Q)sh test/bench/run.sh
	$(Q)sh test/bench/run.sh --pinned
	$(Q)BENCH_PROXY_QUOTA=50 BENCH_ROUNDS=7 BENCH_DURATION=8 sh test/bench/run.sh --pinned
	$(Q)if [ -f test/bench/tls.sh ]; then sh test/bench/tls.sh; fi
	$(Q)if [ -f test/bench/h2.sh ]; then sh test/bench/h2.sh; fi
	$(Q)if [ -f test/bench/overload.sh ]; then sh test/bench/overload.sh; fi

# issue 14: the fewest workers real Gunicorn pools need, swept, beside sluice's figures
# (~20 min; not part of `make bench`)
bench-sizing: deps all
	$(Q)/usr/bin/python3 test/bench/sizing.py

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/doc/sluice $(DESTDIR)/etc/sluice \
		$(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0755 $(BUILD)/sluice $(DESTDIR)$(PREFIX)/sbin/sluice
	install -m 0644 etc/sluice.ini $(DESTDIR)/etc/sluice/sluice.ini.example
	install -d $(DESTDIR)$(PREFIX)/share/sluice
	install -m 0755 contrib/nginx2sluice.py $(DESTDIR)$(PREFIX)/share/sluice/nginx2sluice.py
	install -m 0644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/sluice/
	install -d $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 0644 man/sluice.8 $(DESTDIR)$(PREFIX)/share/man/man8/sluice.8
	install -m 0644 man/sluice.ini.5 $(DESTDIR)$(PREFIX)/share/man/man5/sluice.ini.5
	sed 's|/usr/sbin/sluice|$(PREFIX)/sbin/sluice|g' contrib/sluice.service \
		> $(DESTDIR)$(PREFIX)/lib/systemd/system/sluice.service

clean:
	rm -rf build build-san build-tsan
