/* stratd: one binary, git-style subcommands over the shared libraries. */
#include "cmd/commands.h"

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
        return cmd_bootstrap(argc - 1, argv + 1);
    if (strcmp(command, "version") == 0 || strcmp(command, "--version") == 0) {
        printf("stratd %s\n", STRATD_VERSION);
        return 0;
    }
    if (strcmp(command, "help") == 0 || strcmp(command, "--help") == 0 ||
        strcmp(command, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "stratd: unknown command '%s'\n", command);
    usage(stderr);
    return 2;
}
