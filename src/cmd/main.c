/* stratd: one binary, git-style subcommands over the shared libraries. */
#include "cmd/commands.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: stratd <command> [options]\n\n"
                 "commands:\n"
                 "  serve       run the gateway (HTTP control plane, runtime, markets)\n"
                 "  bootstrap   migrate strategy folders into the content-addressed layout\n"
                 "  version     print the version\n\n"
                 "Run 'stratd <command> --help' for a command's options.\n");
}

/* A report that never reached its reader (a full disk, a closed file) must
 * not look like success to the script that asked for it, so standard output
 * is checked once, when the command is done, rather than at every print. */
static int finish_output(int status)
{
    int flushed = fflush(stdout);
    int why = errno;
    if (flushed == 0 && !ferror(stdout))
        return status;
    if (flushed != 0)
        fprintf(stderr, "stratd: writing standard output failed: %s\n", strerror(why));
    else
        fprintf(stderr, "stratd: writing standard output failed\n");
    return status == 0 ? 1 : status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *command = argv[1];
    if (strcmp(command, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(command, "bootstrap") == 0)
        return finish_output(cmd_bootstrap(argc - 1, argv + 1));
    if (strcmp(command, "version") == 0 || strcmp(command, "--version") == 0) {
        printf("stratd %s\n", STRATD_VERSION);
        return finish_output(0);
    }
    if (strcmp(command, "help") == 0 || strcmp(command, "--help") == 0 ||
        strcmp(command, "-h") == 0) {
        usage(stdout);
        return finish_output(0);
    }
    fprintf(stderr, "stratd: unknown command '%s'\n", command);
    usage(stderr);
    return 2;
}
