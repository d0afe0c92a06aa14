#!/usr/bin/env bash
# Installs what stratd needs on a Debian bookworm machine: Debian packages by
# name, and QuickJS 2025-04-26 built from Debian's (trixie) source package
# into third_party/quickjs. Safe to run again: it only does what is missing.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
quickjs_version=2025.04.26
quickjs_orig=quickjs_${quickjs_version}.orig.tar.xz
quickjs_sha256=ec81da5b3249ed648dbc7df4a1654988910e66a118d9b71cb63534216efcfbbe
quickjs_dir=$here/third_party/quickjs
# QuickJS calls the interrupt handler (the sandboxes' CPU budget) once every
# JS_INTERRUPT_COUNTER_INIT of its polls, 10000 as shipped: a loop whose
# every turn spends long in native code (a join of a large array, a BigInt
# power) then runs thousands of turns past its budget. Built with 1, QuickJS
# calls the handler at every poll and a budget bites after the turn that
# spends it; the handler reads one shared word per poll (see js/ticker.c).
quickjs_interrupt_polls=1
# Natives that walk an array or array-like index by index through the
# generic property path (indexOf, join, forEach, reverse, String.raw ... over
# a sparse array or {length: 2**53 - 1}) poll nowhere: one call would hold a
# worker for hours. Each of the three index accessors they share polls on
# entry (marked `budget poll` below); arrays in the fast layout skip them.
# Sorting is the one native whose single call grows faster than the memory
# it may fill: a typed array of 60 MiB sorts for about 2 s, an array of a
# million strings for 0.3 s. Both sorts poll every 256 compares; a typed
# array's native compares go through a wrapper when it has more than 65,536
# elements (a smaller one sorts within 3 ms, and the wrapper costs 18%).
# Searching a string for another (indexOf, lastIndexOf, includes, split,
# replace, replaceAll) compares the needle at every position: one call
# with a needle of half a million characters in a string of a million ran
# for 200 s. The four search loops poll once per 65,536 characters the
# needle could have compared. `replace` and `replaceAll` with a string
# pattern also poll once per 256 matches they substitute: each match is a
# short search, and 25 million of them in one call ran for 2 s.
# Converting a BigInt to decimal divides the
# whole number once per 19 digits (0.7 s for the largest BigInt); it polls
# before each division.
# The regular expression compiler inserts a jump before everything compiled
# so far at each alternative (and moves it at each term of a lookbehind):
# `new RegExp` of 400,000 alternatives ran 13 s. It polls once per
# alternative and term (libregexp.c asks the same handler).
regexp_budget_polls=2
# The compiler looks names up by walking every name in scope: 30,000 names
# destructured in one declaration compiled for 2 s, a class of 30,000
# private fields for 4 s. A module compiles under a budget (js/module.c);
# the tokenizer polls once per token and the pass that resolves names
# once per name it resolves.
compiler_budget_polls=4
# A BigInt power whose next product is too large to allocate returns the
# error without freeing the power so far: a strategy that catches the
# RangeError in a loop leaked up to 128 KB a turn, past the end of its VM.
# Both products free it (found by tests/fuzz, fuzz_validate).
quickjs_budget_polls=$((16 + compiler_budget_polls))
# `x++` and `x--` on anything but a function's own local (a closure's
# variable, a property, a global: a strategy's counters) always took
# QuickJS's generic path, a numeric conversion and a second dispatch, even
# for a small integer; the build gives them the fast path `++x` has
# (marked `post-increment fast path` below).
# The runtime hands a handler's evt and payload objects on to the next
# delivery when the handler kept nothing of them. Only QuickJS knows whether
# anything still could tell: JS_IsUnobservedObject (appended below) says
# whether an object has one reference, no weak one (WeakMap, WeakSet,
# WeakRef, FinalizationRegistry), no own property, its class's prototype
# and is extensible, i.e. whether a new object of its class would look the
# same to every script.
# With the handler called at every poll, a loop spent a tenth of its time
# in the two calls that reach it (the one out of line, then the handler
# through its pointer), most of which only find that the ticker has not
# moved. JS_SetInterruptGate (appended below) hands QuickJS the ticker's
# word: a poll calls the handler only once the word has moved, or after a
# given number of polls (should the ticker lag), and costs two loads and
# a compare otherwise (marked `interrupt gate` below).
# A strategy that recursed past its stack limit and caught the
# InternalError went on as if nothing had happened, though the limit is
# documented to stop it (a catch far down a recursion cannot tell how much
# of its state it left half-updated). QuickJS throws the error with no hook
# to see it afterwards: the build counts each throw in the runtime, and
# JS_GetStackOverflowCount (appended below) reads the count, so the host
# can tell after a call whether one was thrown in it (marked `stack
# overflow count` below).
# String.prototype.normalize that fails (its buffer refused at the heap cap)
# returned without freeing the buffer it had grown: each such failure
# leaked up to the cap from the process, past the VM's free (found by a
# hostile strategy under LeakSanitizer; marked `normalize leak` below).
sort_poll_mask=255           # a sort polls once per 256 compares
sort_poll_min_elements=65536 # the typed arrays' wrapper starts above this
search_poll_chars=65536      # a string search polls once per this many
quickjs_build_id="${quickjs_version} interrupt-polls=${quickjs_interrupt_polls} budget-polls=${quickjs_budget_polls}"
quickjs_build_id+=" sort-poll=${sort_poll_mask}/${sort_poll_min_elements}"
quickjs_build_id+=" search-poll=${search_poll_chars} replace-poll bigint-poll regexp-polls=${regexp_budget_polls} compiler-polls=${compiler_budget_polls} pow-leak-fixed unobserved-object post-inc-int interrupt-gate stack-overflow-count normalize-leak-fixed"

packages=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libmicrohttpd-dev libgnutls28-dev libjansson-dev libssl-dev libsqlite3-dev sqlite3
  libyaml-dev libcurl4-openssl-dev libcmocka-dev zlib1g-dev
  prometheus wrk jq xz-utils ca-certificates curl openssl systemd
)
# `--bench`: also what make bench needs (the Node.js peers of bench/peer/;
# any installed node will do, else Debian's). `--lint`: what make lint runs.
for flag in "$@"; do
  case $flag in
    --bench) command -v node >/dev/null || packages+=(nodejs) ;;
    --lint) packages+=(clang-format clang-tidy cppcheck shellcheck) ;;
    *) echo "usage: $0 [--bench] [--lint]" >&2; exit 2 ;;
  esac
done

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # prometheus would start a daemon on install; only promtool is wanted.
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    "${sudo_cmd[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

if [ -f "$quickjs_dir/lib/libquickjs.a" ] && [ -f "$quickjs_dir/include/quickjs.h" ] &&
  [ "$(cat "$quickjs_dir/VERSION" 2>/dev/null)" = "$quickjs_build_id" ]; then
  exit 0
fi

echo "fetching QuickJS ${quickjs_version} from Debian's source package"
work=$here/third_party/quickjs-src
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/download"
cat >"$work/apt/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
SRC
apt_opts=(
  -o "Dir::Etc::SourceList=$work/apt/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/apt/lists"
  -o "Dir::Cache=$work/apt/cache"
  -o "APT::Sandbox::User=root"
)
mkdir -p "$work/apt/cache/archives/partial"
apt-get "${apt_opts[@]}" update -qq
(cd "$work/download" && {
  apt-get "${apt_opts[@]}" source --download-only -qq "quickjs=${quickjs_version}-1" \
    || apt-get "${apt_opts[@]}" source --download-only -qq quickjs
})

tarball=$work/download/$quickjs_orig
[ -f "$tarball" ] || { echo "error: $quickjs_orig was not downloaded" >&2; exit 1; }
echo "$quickjs_sha256  $tarball" | sha256sum --check --quiet - \
  || { echo "error: $quickjs_orig does not match its pinned SHA-256" >&2; exit 1; }

mkdir -p "$work/tree"
tar -xJf "$tarball" -C "$work/tree" --strip-components=1
sed -i "s/^#define JS_INTERRUPT_COUNTER_INIT 10000\$/#define JS_INTERRUPT_COUNTER_INIT ${quickjs_interrupt_polls}/" \
  "$work/tree/quickjs.c"
grep -q "^#define JS_INTERRUPT_COUNTER_INIT ${quickjs_interrupt_polls}\$" "$work/tree/quickjs.c" \
  || { echo "error: quickjs.c has no JS_INTERRUPT_COUNTER_INIT to set" >&2; exit 1; }
poll_on_entry() { # poll_on_entry SIGNATURE-LINE-REGEX STATEMENT
  sed -i "/$1/,/^{\$/ s/^{\$/{\n    $2 \/* budget poll *\//" "$work/tree/quickjs.c"
}
poll_on_entry '^JSValue JS_GetPropertyUint32(JSContext \*ctx, JSValueConst this_obj,$' \
  'if (js_poll_interrupts(ctx)) return JS_EXCEPTION;'
poll_on_entry '^static int JS_TryGetPropertyInt64(JSContext \*ctx, JSValueConst obj, int64_t idx, JSValue \*pval)$' \
  'if (js_poll_interrupts(ctx)) { *pval = JS_UNDEFINED; return -1; }'
poll_on_entry '^static JSValue JS_GetPropertyInt64(JSContext \*ctx, JSValueConst obj, int64_t idx)$' \
  'if (js_poll_interrupts(ctx)) return JS_EXCEPTION;'
sed -i '/^struct array_sort_context {$/,/^};$/ s/^    JSValueConst method;$/&\n    unsigned int compares; \/* budget poll *\//' "$work/tree/quickjs.c"
sed -i '/^static int js_array_cmp_generic(const void \*a, const void \*b, void \*opaque) {$/,/^    if (psc->exception)$/ s/^    if (psc->exception)$/    if (!psc->exception \&\& (++psc->compares \& '"$sort_poll_mask"') == 0 \&\& js_poll_interrupts(ctx)) \/* budget poll *\/\n        psc->exception = 1;\n&/' \
  "$work/tree/quickjs.c"
sed -i '/^struct TA_sort_context {$/,/^};$/ s/^    int elt_size;$/&\n    int (*native_cmp)(const void *a, const void *b, void *opaque); \/* budget poll *\/\n    unsigned int compares;/' \
  "$work/tree/quickjs.c"
sed -i '/^static JSValue js_typed_array_sort(JSContext \*ctx, JSValueConst this_val,$/i\
static int js_TA_cmp_polled(const void *a, const void *b, void *opaque) /* budget poll */\
{\
    struct TA_sort_context *psc = opaque;\
    if (psc->exception)\
        return 0;\
    if ((++psc->compares \& '"$sort_poll_mask"') == 0 \&\& js_poll_interrupts(psc->ctx)) {\
        psc->exception = 1;\
        return 0;\
    }\
    return psc->native_cmp(a, b, opaque);\
}\
' "$work/tree/quickjs.c"
sed -i 's/^            rqsort(array_ptr, len, elt_size, cmpfun, &tsc);$/            tsc.native_cmp = cmpfun; \/* budget poll *\/\n            tsc.compares = 0;\n            rqsort(array_ptr, len, elt_size, len > '"$sort_poll_min_elements"' ? js_TA_cmp_polled : cmpfun, \&tsc);/' \
  "$work/tree/quickjs.c"
search_poll="if ((searched += LEN) >= $search_poll_chars) { searched = 0; if (js_poll_interrupts(ctx)) FAIL; } \/* budget poll *\/"
sed -i '/^static int string_indexof(JSString \*p1, JSString \*p2, int from)$/,/^}$/ {
s/^static int string_indexof(JSString \*p1, JSString \*p2, int from)$/static int string_indexof(JSContext *ctx, JSString *p1, JSString *p2, int from) \/* budget poll *\//
s/^    int c, i, j, len1 = p1->len, len2 = p2->len;$/&\n    int searched = 0;/
s/^            return j;$/&\n        '"${search_poll//LEN/len2}"'/
s/FAIL;/return -2;/
}' "$work/tree/quickjs.c"
sed -i 's/^            pos = string_indexof(sp, searchp, endOfLastMatch);$/            pos = string_indexof(ctx, sp, searchp, endOfLastMatch);\n            if (pos == -2) goto exception; \/* budget poll *\//' \
  "$work/tree/quickjs.c"
sed -i 's/^        e = string_indexof(sp, rp, q);$/        e = string_indexof(ctx, sp, rp, q);\n        if (e == -2) goto exception; \/* budget poll *\//' \
  "$work/tree/quickjs.c"
sed -i '/^static JSValue js_string_replace(JSContext \*ctx, JSValueConst this_val,$/,/^}$/ {
s/^    BOOL is_first;$/&\n    unsigned int substituted = 0;/
s/^        is_first = FALSE;$/&\n        if ((++substituted \& 255) == 0 \&\& js_poll_interrupts(ctx)) goto exception; \/* budget poll *\//
}' "$work/tree/quickjs.c"
for search in js_string_indexOf js_string_includes; do
  sed -i "/^static JSValue $search(JSContext \*ctx, JSValueConst this_val,\$/,/^}\$/ {
s/^    int i, len, v_len, pos, start, stop, ret\(, inc\)\{0,1\};\$/&\n    int searched = 0;/
s/^            if (i == stop)\$/            ${search_poll//LEN/v_len}\n&/
s/FAIL;/goto fail;/
}" "$work/tree/quickjs.c"
done
sed -i '/^static JSValue js_bigint_to_string1(JSContext \*ctx, JSValueConst val, int radix)$/,/^}$/ s/^                    v = mp_div1(r->tab, r->tab, len, radix_base, 0);$/                    if (js_poll_interrupts(ctx)) { js_free(ctx, buf); js_free(ctx, tmp); return JS_EXCEPTION; } \/* budget poll *\/\n&/' \
  "$work/tree/quickjs.c"
sed -i '/^static __exception int next_token(JSParseState \*s)$/,/^}$/ s/^        return js_parse_error(s, "stack overflow");$/&\n    }\n    if (js_poll_interrupts(s->ctx)) { \/* budget poll *\/\n        return -1;/' \
  "$work/tree/quickjs.c"
sed -i '/^static __exception int resolve_variables(JSContext \*ctx, JSFunctionDef \*s)$/,/^}$/ {
s/^        case OP_scope_put_var_init:$/&\n            if (js_poll_interrupts(ctx)) goto fail; \/* budget poll *\//
s/^        case OP_scope_make_ref:$/&\n            if (js_poll_interrupts(ctx)) goto fail; \/* budget poll *\//
s/^        case OP_scope_in_private_field:$/&\n            if (js_poll_interrupts(ctx)) goto fail; \/* budget poll *\//
}' "$work/tree/quickjs.c"
sed -i '/^static JSBigInt \*js_bigint_pow(JSContext \*ctx, const JSBigInt \*a, JSBigInt \*b)$/,/^}$/ s/^\( *\)if (!r1)$/\1if (!r1 \&\& (js_free(ctx, r), 1)) \/* pow leak *\//' \
  "$work/tree/quickjs.c"
[ "$(grep -c '/\* pow leak \*/$' "$work/tree/quickjs.c")" = 2 ] \
  || { echo "error: quickjs.c's BigInt power is not what was expected" >&2; exit 1; }
regexp_poll='if (lre_check_timeout(s->opaque)) return re_parse_error(s, "interrupted"); \/* budget poll *\/'
sed -i '/^static int re_parse_alternative(REParseState \*s, BOOL is_backward_dir)$/,/^}$/ s/^        term_start = s->byte_code.size;$/        '"$regexp_poll"'\n&/' \
  "$work/tree/libregexp.c"
sed -i '/^static int re_parse_disjunction(REParseState \*s, BOOL is_backward_dir)$/,/^}$/ s/^        s->buf_ptr++;$/&\n        '"$regexp_poll"'/' \
  "$work/tree/libregexp.c"
sed -i '/^int unicode_normalize(uint32_t \*\*pdst, const uint32_t \*src, int src_len,$/,/^}$/ s/^        \*pdst = NULL;$/        dbuf_free(dbuf); \/* normalize leak *\/\n&/' \
  "$work/tree/libunicode.c"
[ "$(grep -c 'normalize leak' "$work/tree/libunicode.c")" = 1 ] \
  || { echo "error: libunicode.c's unicode_normalize is not what was expected" >&2; exit 1; }
[ "$(grep -c '/\* budget poll \*/$' "$work/tree/libregexp.c")" = "$regexp_budget_polls" ] \
  || { echo "error: libregexp.c's parser loops are not where expected" >&2; exit 1; }
[ "$(grep -c '/\* budget poll \*/$' "$work/tree/quickjs.c")" = "$quickjs_budget_polls" ] \
  || { echo "error: quickjs.c's index accessors, sorts or searches are not where expected" >&2; exit 1; }
sed -i '/^        CASE(OP_post_inc):$/,/^            BREAK;$/ s/^            sf->cur_pc = pc;$/            if (JS_VALUE_GET_TAG(sp[-1]) == JS_TAG_INT) { \/* post-increment fast path *\/\
                int v = JS_VALUE_GET_INT(sp[-1]);\
                if (opcode == OP_post_inc ? v != INT32_MAX : v != INT32_MIN) {\
                    sp[0] = JS_NewInt32(ctx, opcode == OP_post_inc ? v + 1 : v - 1);\
                    sp++;\
                    BREAK;\
                }\
            }\
&/' "$work/tree/quickjs.c"
[ "$(grep -c 'post-increment fast path' "$work/tree/quickjs.c")" = 1 ] \
  || { echo "error: quickjs.c's OP_post_inc is not what was expected" >&2; exit 1; }
sed -i 's/^    void \*interrupt_opaque;$/&\
    const uint32_t *interrupt_gate; \/* interrupt gate *\/\
    uint32_t interrupt_gate_seen;\
    int interrupt_gate_polls, interrupt_gate_left;\
    uint32_t stack_overflows; \/* stack overflow count *\//' "$work/tree/quickjs.c"
sed -i '/^static JSValue JS_ThrowStackOverflow(JSContext \*ctx)$/,/^}$/ s/^    return JS_ThrowInternalError(ctx, "stack overflow");$/    ctx->rt->stack_overflows++; \/* stack overflow count *\/\n&/' \
  "$work/tree/quickjs.c"
[ "$(grep -c 'stack overflow count' "$work/tree/quickjs.c")" = 2 ] \
  || { echo "error: quickjs.c's JS_ThrowStackOverflow is not what was expected" >&2; exit 1; }
sed -i '/^static inline __exception int js_poll_interrupts(JSContext \*ctx)$/,/^}$/ s/^{$/{\
    JSRuntime *rt = ctx->rt; \/* interrupt gate *\/\
    if (rt->interrupt_gate) {\
        uint32_t word = __atomic_load_n(rt->interrupt_gate, __ATOMIC_RELAXED);\
        if (likely(word == rt->interrupt_gate_seen \&\& --rt->interrupt_gate_left > 0))\
            return 0;\
        rt->interrupt_gate_seen = word;\
        rt->interrupt_gate_left = rt->interrupt_gate_polls;\
        return __js_poll_interrupts(ctx);\
    }/' "$work/tree/quickjs.c"
[ "$(grep -c 'interrupt gate' "$work/tree/quickjs.c")" = 2 ] \
  || { echo "error: quickjs.c's JSRuntime or js_poll_interrupts is not what was expected" >&2; exit 1; }
cat >>"$work/tree/quickjs.c" <<'C'

/* interrupt gate (see scripts/install-deps.sh): the handler is called once
 * *word differs from its value at the last call or at this call, or after
 * `polls` polls; NULL calls it at every poll, as QuickJS does. */
void JS_SetInterruptGate(JSRuntime *rt, const uint32_t *word, int polls)
{
    rt->interrupt_gate = word;
    rt->interrupt_gate_seen = word ? __atomic_load_n(word, __ATOMIC_RELAXED) : 0;
    rt->interrupt_gate_polls = rt->interrupt_gate_left = polls > 0 ? polls : 1;
}

/* stack overflow count (see scripts/install-deps.sh): how many stack
 * overflow errors the runtime has thrown, caught or not; wraps around. */
uint32_t JS_GetStackOverflowCount(JSRuntime *rt)
{
    return rt->stack_overflows;
}

/* unobserved object (see scripts/install-deps.sh) */
int JS_IsUnobservedObject(JSContext *ctx, JSValueConst obj)
{
    JSObject *p;
    JSValueConst proto;
    if (JS_VALUE_GET_TAG(obj) != JS_TAG_OBJECT)
        return 0;
    p = JS_VALUE_GET_OBJ(obj);
    proto = ctx->class_proto[p->class_id];
    return p->header.ref_count == 1 && p->weakref_count == 0 && p->extensible &&
        p->shape->prop_count == 0 && JS_VALUE_GET_TAG(proto) == JS_TAG_OBJECT &&
        p->shape->proto == JS_VALUE_GET_OBJ(proto);
}
C
sed -i 's/^int JS_IsExtensible(JSContext \*ctx, JSValueConst obj);$/&\nint JS_IsUnobservedObject(JSContext *ctx, JSValueConst obj); \/* unobserved object *\//' \
  "$work/tree/quickjs.h"
[ "$(cat "$work/tree/quickjs.c" "$work/tree/quickjs.h" | grep -c 'unobserved object')" = 2 ] \
  || { echo "error: quickjs.h does not declare JS_IsExtensible where expected" >&2; exit 1; }
sed -i 's/^void JS_SetInterruptHandler(JSRuntime \*rt, JSInterruptHandler \*cb, void \*opaque);$/&\nvoid JS_SetInterruptGate(JSRuntime *rt, const uint32_t *word, int polls); \/* interrupt gate *\//' \
  "$work/tree/quickjs.h"
[ "$(grep -c 'interrupt gate' "$work/tree/quickjs.h")" = 1 ] \
  || { echo "error: quickjs.h does not declare JS_SetInterruptHandler where expected" >&2; exit 1; }
sed -i 's/^void JS_SetMaxStackSize(JSRuntime \*rt, size_t stack_size);$/&\nuint32_t JS_GetStackOverflowCount(JSRuntime *rt); \/* stack overflow count *\//' \
  "$work/tree/quickjs.h"
[ "$(grep -c 'stack overflow count' "$work/tree/quickjs.h")" = 1 ] \
  || { echo "error: quickjs.h does not declare JS_SetMaxStackSize where expected" >&2; exit 1; }
make -C "$work/tree" -j"$(nproc)" libquickjs.a >/dev/null
mkdir -p "$quickjs_dir/lib" "$quickjs_dir/include"
cp "$work/tree/libquickjs.a" "$quickjs_dir/lib/"
cp "$work/tree/quickjs.h" "$work/tree/quickjs-libc.h" "$quickjs_dir/include/"
echo "$quickjs_build_id" >"$quickjs_dir/VERSION"
rm -rf "$work"
echo "QuickJS ${quickjs_version} built into third_party/quickjs"
