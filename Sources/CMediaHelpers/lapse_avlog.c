// libav's log callback receives a va_list, which Swift cannot accept in a C-convention closure on Linux,
// so the callback lives here. The last error line is kept per thread: libav logs a parse error on the thread
// that made the failing call, which is the thread that reports it.
#include "lapse_media.h"

#include <libavutil/log.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];
static int echo_all = 0;

static void lapse_av_log_callback(void *object, int level, const char *format, va_list arguments) {
    (void)object;
    if (level > AV_LOG_ERROR && !(echo_all && level <= AV_LOG_INFO)) return;
    char line[1024];
    vsnprintf(line, sizeof line, format, arguments);
    size_t length = strlen(line);
    while (length > 0 && (line[length - 1] == '\n' || line[length - 1] == ' ')) line[--length] = 0;
    if (echo_all) fprintf(stderr, "[libav] %s\n", line);
    if (level <= AV_LOG_ERROR && length > 0) memcpy(last_error, line, length + 1);
}

void lapse_av_log_install(int echo) {
    echo_all = echo;
    av_log_set_callback(lapse_av_log_callback);
}

const char *lapse_av_last_error(void) { return last_error; }

void lapse_av_clear_error(void) { last_error[0] = 0; }
