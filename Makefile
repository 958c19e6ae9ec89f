SHELL := /bin/bash

# ngx_defarm_module: build, run, test and benchmark.
#
#   make          build build/ngx_defarm_module.so against Debian's nginx
#   make deps     install the Debian packages the project needs (idempotent)
#   make run      deps + build, then PostgreSQL, Redis, an IPFS node and
#                 nginx on conf/defarm.conf in the foreground (Ctrl-C
#                 stops all)
#   make test     deps + build, then the whole suite against a throwaway
#                 PostgreSQL, Redis and IPFS node
#   make bench    benchmarks under bench/ (ratios against baselines)
#   make chaos    fault injection (t/chaos/): PostgreSQL stopped, killed
#                 and frozen, Redis killed, reloads, a worker killed
#                 holding the cache lock, aborted clients, hostile input
#   make asan     a whole nginx and the module with AddressSanitizer and
#                 UBSan (nginx's source from Debian's archive), then the
#                 suite against it; any sanitizer report fails it
#   make fuzz     libFuzzer harnesses under fuzz/ (clang, ASan, UBSan):
#                 regressions replayed, then FUZZ_SECONDS (30) each

NGINX_SRC   ?= /usr/share/nginx/src
BUILD       := $(CURDIR)/build
NGX_BUILD   := $(BUILD)/nginx
GEN_DIR     := $(BUILD)/gen
MODULE      := $(BUILD)/ngx_defarm_module.so
SOURCES     := $(shell find src -name '*.[ch]' 2>/dev/null)

# Debian's own flags for its nginx binary, so the module is built the way
# the binary it loads into was (hardening flags included).
CC_OPT      := -g -O2 -fstack-protector-strong -Wformat \
               -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2
LD_OPT      := -Wl,-z,relro -Wl,-z,now -fPIC

.PHONY: all deps run test chaos bench asan fuzz lint clean version-header

all: $(MODULE)

deps:
	@bash scripts/deps.sh

version-header:
	@bash scripts/gen_version.sh $(GEN_DIR)/ngx_defarm_version.h

$(NGX_BUILD)/objs/Makefile: config Makefile
	@test -x $(NGINX_SRC)/configure || { \
	    echo "nginx source not found in $(NGINX_SRC): run 'make deps'" \
	         "(it installs nginx-dev)"; exit 1; }
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -a $(NGINX_SRC) $(NGX_BUILD)
	bash scripts/gen_version.sh $(GEN_DIR)/ngx_defarm_version.h
	cd $(NGX_BUILD) && . ./conf_flags && \
	    NGX_DEFARM_GEN_DIR=$(GEN_DIR) ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt='$(CC_OPT)' --with-ld-opt='$(LD_OPT)' \
	        --add-dynamic-module=$(CURDIR) > $(BUILD)/configure.log 2>&1 \
	    || { tail -n 30 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(NGX_BUILD)/objs/Makefile version-header $(SOURCES)
	$(MAKE) -C $(NGX_BUILD) -f objs/Makefile modules
	@# a new file renamed into place: a running nginx keeps its mapping
	cp $(NGX_BUILD)/objs/ngx_defarm_module.so $(MODULE).tmp
	mv -f $(MODULE).tmp $(MODULE)

run: deps all
	@bash scripts/run.sh

test: deps all
	@bash scripts/test.sh

chaos: deps all
	@TEST_CHAOS=1 TEST_FILES=t/chaos/ bash scripts/test.sh

bench: deps all
	@bash bench/run.sh

asan: deps
	@bash scripts/asan.sh test

fuzz: deps
	@bash scripts/fuzz.sh

lint:
	@bash scripts/check_style.sh

clean:
	rm -rf $(BUILD) t/servroot*
