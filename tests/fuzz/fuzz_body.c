/*
 * Request bodies: jsonutil_parse_object_lifting (an upload's body, its
 * long "source" decoded by a direct scan) against jsonutil_parse_object
 * (jansson alone) on the same text.
 *
 * Each "@@" in the input becomes 1,100 letters, so that inputs of a few
 * bytes can hold a string long enough to be lifted wherever the fuzzer puts
 * it: in the source, in another member, in a key, in a nested value.
 *
 * Invariant: the two parses agree: the same object (json_equal), or both
 * fail with the same message.
 */
#include "fuzzutil.h"

#include "core/jsonutil.h"

#define FILLER_BYTES 1100

static char *expand(const uint8_t *data, size_t size, size_t *len)
{
    size_t marks = 0;
    for (size_t i = 0; i + 1 < size; i++)
        marks += data[i] == '@' && data[i + 1] == '@';
    char *text = malloc(size + marks * FILLER_BYTES + 1);
    if (!text)
        abort();
    size_t n = 0;
    for (size_t i = 0; i < size; i++) {
        if (i + 1 < size && data[i] == '@' && data[i + 1] == '@') {
            for (size_t k = 0; k < FILLER_BYTES; k++)
                text[n++] = (char)('a' + k % 26);
            i++;
        } else {
            text[n++] = (char)data[i];
        }
    }
    text[n] = '\0';
    *len = n;
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len = 0;
    char *text = expand(data, size, &len);
    struct err plain_err = ERR_INIT, lifted_err = ERR_INIT;
    json_t *plain = jsonutil_parse_object(text, len, &plain_err);
    json_t *lifted = jsonutil_parse_object_lifting(text, len, "source", &lifted_err);
    if (plain)
        fuzz_check(lifted && json_equal(plain, lifted), "the lifted parse differs");
    else
        fuzz_check(!lifted && strcmp(plain_err.message, lifted_err.message) == 0,
                   "jansson refused (%s), the lifted parse %s", plain_err.message,
                   lifted ? "accepted" : lifted_err.message);
    json_decref(plain);
    json_decref(lifted);
    err_clear(&plain_err);
    err_clear(&lifted_err);
    free(text);
    return 0;
}
