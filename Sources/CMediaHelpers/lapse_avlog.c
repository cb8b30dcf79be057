// libav's log callback receives a va_list, which Swift cannot accept in a C-convention closure on Linux,
// so the callback lives here. The last error line is kept per thread: libav logs a parse error on the thread
// that made the failing call, which is the thread that reports it.
#include "lapse_media.h"

#include <libavutil/log.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];
/* libav builds some lines from several calls ("Error initializing filter 'scale'" + " with args '…'" + "\n"). */
static _Thread_local int line_open = 0;
static int echo_all = 0;

static void lapse_av_log_callback(void *object, int level, const char *format, va_list arguments) {
    (void)object;
    if (level > AV_LOG_ERROR && !(echo_all && level <= AV_LOG_INFO)) return;
    char piece[1024];
    vsnprintf(piece, sizeof piece, format, arguments);
    if (echo_all) fputs(piece, stderr);
    if (level > AV_LOG_ERROR) return;
    size_t length = strlen(piece);
    int ends_line = length > 0 && piece[length - 1] == '\n';
    while (ends_line && length > 0 && (piece[length - 1] == '\n' || piece[length - 1] == ' ')) piece[--length] = 0;
    if (line_open) {
        size_t used = strlen(last_error);
        snprintf(last_error + used, sizeof last_error - used, "%s", piece);
    } else if (length > 0) {
        snprintf(last_error, sizeof last_error, "%s", piece);
    }
    line_open = !ends_line;
}

void lapse_av_log_install(int echo) {
    echo_all = echo;
    av_log_set_callback(lapse_av_log_callback);
}

const char *lapse_av_last_error(void) { return last_error; }

void lapse_av_clear_error(void) {
    last_error[0] = 0;
    line_open = 0;
}
