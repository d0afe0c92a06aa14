/* The service manager's notification datagram (notify.h). */
#include "cmd/notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Fills addr from NOTIFY_SOCKET's value; returns the address's length. */
static int socket_address(const char *name, struct sockaddr_un *addr, socklen_t *len,
                          struct err *err)
{
    size_t n = strlen(name);
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if ((name[0] != '/' && name[0] != '@') || n < 2 || n >= sizeof addr->sun_path) {
        err_set(err, ERR_INVALID,
                "NOTIFY_SOCKET '%s' is neither a socket's absolute path nor an abstract name "
                "('@name') of at most %zu bytes",
                name, sizeof addr->sun_path - 1);
        return -1;
    }
    memcpy(addr->sun_path, name, n);
    if (name[0] == '@') /* the abstract namespace: a leading NUL, no terminator */
        addr->sun_path[0] = '\0';
    else
        n++;
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 0;
}

int notify_send(const char *message, struct err *err)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (!name || !*name)
        return 0;
    struct sockaddr_un addr;
    socklen_t len;
    if (socket_address(name, &addr, &len, err) != 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "NOTIFY_SOCKET: socket");
        return -1;
    }
    size_t size = strlen(message);
    ssize_t sent = sendto(fd, message, size, MSG_NOSIGNAL, (const struct sockaddr *)&addr, len);
    int saved = errno;
    close(fd);
    if (sent < 0 || (size_t)sent != size) {
        err_set_errno(err, ERR_INTERNAL, sent < 0 ? saved : EMSGSIZE,
                      "cannot tell the service manager at NOTIFY_SOCKET %s", name);
        return -1;
    }
    return 0;
}
