#include "cmd/commands.h"

#include <stdio.h>

int cmd_serve(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "stratd serve: not built yet\n");
    return 1;
}
