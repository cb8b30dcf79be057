#include <libavformat/avformat.h>
#include <libavcodec/avcodec.h>
#include <libavfilter/avfilter.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libswscale/swscale.h>
#include <libavutil/avutil.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libavutil/error.h>

/* Function-like macros Swift cannot import. */
static inline int lapse_averror_eagain(void) { return AVERROR(EAGAIN); }
static inline int lapse_averror_eof(void) { return AVERROR_EOF; }
static inline int64_t lapse_av_nopts_value(void) { return AV_NOPTS_VALUE; }
static inline int lapse_averror_stream_not_found(void) { return AVERROR_STREAM_NOT_FOUND; }
static inline int lapse_averror_decoder_not_found(void) { return AVERROR_DECODER_NOT_FOUND; }
