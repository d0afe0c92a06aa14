#include "cmd/commands.h"

#include <stdio.h>

int cmd_bootstrap(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "stratd bootstrap: not built yet\n");
    return 1;
}
