# The two commands a new machine needs are `make run` and `make test`; every
# other target is for people working on stratd.
JOBS ?= $(shell nproc)
BUILD_TYPE ?= RelWithDebInfo
SANITIZER_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp
TSAN_ENV = TSAN_OPTIONS=suppressions=$(CURDIR)/tests/tsan.supp:second_deadlock_stack=1

.PHONY: all deps build run test test-unit test-sanitize test-thread bench fuzz soak format lint clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	@cmake --build build -j$(JOBS)

run: build
	@scripts/run-examples.sh

# Every test on the normal build, then the whole suite again under
# AddressSanitizer and UndefinedBehaviorSanitizer, and once more under
# ThreadSanitizer.
test: build
	ctest --test-dir build --output-on-failure -j$(JOBS)
	@$(MAKE) --no-print-directory test-sanitize
	@$(MAKE) --no-print-directory test-thread

test-unit: build
	ctest --test-dir build --output-on-failure -L unit -j$(JOBS)

test-sanitize: deps
	@cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DSTRATD_SANITIZE=ON >/dev/null
	@cmake --build build/asan -j$(JOBS)
	$(SANITIZER_ENV) ctest --test-dir build/asan --output-on-failure -j$(JOBS)

# A server or test the sanitizer caught in a data race or a lock-order
# inversion exits with status 66 and fails its test.
test-thread: deps
	@cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATD_TSAN=ON >/dev/null
	@cmake --build build/tsan -j$(JOBS)
	$(TSAN_ENV) ctest --test-dir build/tsan --output-on-failure -j$(JOBS)

bench:
	@scripts/install-deps.sh --bench
	@cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DSTRATD_TESTS=OFF -DSTRATD_BENCH=ON >/dev/null
	@cmake --build build/release -j$(JOBS)
	@bench/run.sh build/release

fuzz: deps
	@scripts/fuzz.sh long

# The long soak: 100 instances on a fast simulated market, control-plane
# traffic and hostile strategies for STRATD_SOAK_SECONDS (default 600); it
# prints events, rates, the RSS series and handler p99 per window. The short
# form (about 80 s) is part of `make test`.
soak: build
	@STRATD_SOAK_SECONDS=$${STRATD_SOAK_SECONDS:-600} build/tests/integration_test_soak

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

# Formatting, clang-tidy (findings are errors, see .clang-tidy) and cppcheck.
lint: build
	@scripts/install-deps.sh --lint
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')
	@git ls-files 'src/*.c' | xargs -P $(JOBS) -n 8 clang-tidy -p build --quiet
	@cppcheck --quiet --enable=warning,performance,portability --inline-suppr \
	  --suppress=missingIncludeSystem --include=/usr/include/jansson.h -I src \
	  $$(git ls-files 'src/*.c')
	@shellcheck -x $$(git ls-files '*.sh') .ci/run

clean:
	rm -rf build
